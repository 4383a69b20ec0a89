"""Health checks: the image's HEALTHCHECK or the create body's, run as an exec in the container.

Docker's rules: a check runs every Interval (default 30 s) with Timeout (default 30 s); Retries
(default 3) consecutive failures make the container unhealthy, except failures inside the
StartPeriod; each change of status is a `health_status: <status>` event. Inspect shows the
status, the failing streak and the last five results.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from dockerapi import model
from dockerapi.model import Front
from engine.errors import InvalidArgument
from engine.store import ContainerRecord
from runtime import containers as monitor

NS = 1_000_000_000
DEFAULT_INTERVAL = DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
KEEP = 5
MAX_OUTPUT = 4096


@dataclass
class Health:
    status: str = "starting"
    streak: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {"Status": self.status, "FailingStreak": self.streak, "Log": list(self.log)}


def resolve(given: Any, image_doc: dict[str, Any]) -> dict[str, Any] | None:
    """The check in force: the body's fields over the image's; NONE turns it off."""
    if given is not None and not isinstance(given, dict):
        raise InvalidArgument("Healthcheck must be an object")
    image_hc = (image_doc.get("config") or {}).get("Healthcheck") or {}
    merged = {**image_hc, **{k: v for k, v in (given or {}).items() if v not in (None, 0, [])}}
    test = merged.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidArgument("Healthcheck.Test must be a list of strings")
    if not test or test[0] == "NONE":
        return None
    if test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
        raise InvalidArgument(f"Healthcheck.Test must start with CMD, CMD-SHELL or NONE, got "
                              f"{test[0][:50]}")
    for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
        value = merged.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"Healthcheck.{key} must be a non-negative integer")
    for key in ("Interval", "Timeout"):
        if merged.get(key) and merged[key] < NS // 1000:
            raise InvalidArgument(f"Healthcheck.{key} must be at least 1ms")
    return merged


def _argv(hc: dict[str, Any]) -> list[str]:
    test = hc["Test"]
    return ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])


def start(front: Front, rec: ContainerRecord) -> None:
    """Begin checking a container that just started (a restart begins afresh)."""
    hc = model.docker(rec).get("healthcheck")
    if not hc:
        return
    stop(front, rec.id)
    h = front.health[rec.id] = Health()
    h.task = asyncio.get_running_loop().create_task(_loop(front, rec, hc, h))


def stop(front: Front, cid: str) -> None:
    """The container stopped: no more checks; the last status stays for inspect."""
    h = front.health.get(cid)
    if h is not None and h.task is not None:
        h.task.cancel()
        h.task = None


async def _loop(front: Front, rec: ContainerRecord, hc: dict[str, Any], h: Health) -> None:
    interval = (hc.get("Interval") or DEFAULT_INTERVAL * NS) / NS
    timeout = (hc.get("Timeout") or DEFAULT_TIMEOUT * NS) / NS
    retries = hc.get("Retries") or DEFAULT_RETRIES
    grace_until = time.monotonic() + (hc.get("StartPeriod") or 0) / NS
    process = dict(rec.extra.get("process") or {})
    process.update(args=_argv(hc), terminal=False)
    while True:
        await asyncio.sleep(interval)
        started = time.time_ns()
        try:
            res = await front.ctx.monitor.exec_sync(rec.id, process, timeout=timeout,
                                                    max_output=MAX_OUTPUT)
            code = -1 if res.timed_out else res.exit_code
            output = (f"Health check exceeded timeout ({timeout:g}s)" if res.timed_out
                      else (res.stdout + res.stderr).decode(errors="replace"))
        except (monitor.MonitorError, ConnectionError) as exc:
            code, output = -1, str(exc)
        h.log = [*h.log, {"Start": _iso(started), "End": _iso(time.time_ns()),
                          "ExitCode": code, "Output": output}][-KEEP:]
        before = h.status
        if code == 0:
            h.streak, h.status = 0, "healthy"
        elif time.monotonic() >= grace_until or h.status != "starting":
            h.streak += 1
            if h.streak >= retries:
                h.status = "unhealthy"
        if h.status != before:
            front.publish(rec, f"health_status: {h.status}", {})


def _iso(ns: int) -> str:
    secs, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def cancel_all(front: Front) -> None:
    for cid in list(front.health):
        with contextlib.suppress(Exception):
            stop(front, cid)
