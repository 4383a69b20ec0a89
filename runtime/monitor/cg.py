"""The monitor's narrow use of runtime.cgroups: JSON in and out, errors of stragglers ignored."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import asdict
from typing import Any

from runtime import cgroups

KILL_TIMEOUT = 1.0  # kill_all polls synchronously: keep the monitor loop's stall short
KILL_ROUND = 0.05  # one synchronous kill_all inside drain(): short, drain() waits between rounds
DRAIN_TIMEOUT = 10.0  # how long stop/delete wait for a killed cgroup to empty before saying so


@functools.cache
def _driver() -> Any | None:
    try:
        return cgroups.driver()
    except OSError:  # no cgroup mount at all: run without limits or OOM detection
        return None


def _resources(oci: dict[str, Any]) -> Any:
    """OCI linux.resources to the drivers' Resources."""
    cpu, mem, pids = oci.get("cpu") or {}, oci.get("memory") or {}, oci.get("pids") or {}
    blkio = oci.get("blockIO") or {}
    return cgroups.Resources(
        cpu_shares=cpu.get("shares"), cpu_quota=cpu.get("quota"), cpu_period=cpu.get("period"),
        cpuset_cpus=cpu.get("cpus") or None, cpuset_mems=cpu.get("mems") or None,
        memory_limit=mem.get("limit"), memory_swap_limit=mem.get("swap"),
        pids_limit=pids.get("limit"),
        hugepage_limits={h["pageSize"]: h["limit"] for h in oci.get("hugepageLimits") or []},
        io_weight=blkio.get("weight"), io_limits=[
            cgroups.IoLimit(int(d["major"]), int(d["minor"]), key, int(d["rate"]))
            for field, key in cgroups.IO_KEYS.items() for d in blkio.get(field) or []],
        unified=dict(oci.get("unified") or {}))


def available() -> bool:
    """Whether cgroup management (and so OOM detection) is in this build."""
    return _driver() is not None


def create(path: str, spec: dict[str, Any]) -> None:
    """Make the container's cgroup with the spec's limits before the process joins it."""
    drv = _driver()
    if drv is not None and path:
        drv.create(path, _resources((spec.get("linux") or {}).get("resources") or {}))


def update(path: str, resources: dict[str, Any]) -> None:
    """Apply new limits given in OCI linux.resources form."""
    drv = _driver()
    if drv is None or not path:
        raise RuntimeError("this container has no cgroup to update")
    drv.update(path, _resources(resources))


def oom_kills(path: str) -> int:
    """OOM kills so far; read before remove(), which loses the counter."""
    drv = _driver()
    if drv is None or not path:
        return 0
    with contextlib.suppress(OSError, ValueError):
        return int(drv.oom_kill_count(path))
    return 0


def kill_all(path: str) -> None:
    """SIGKILL whatever is left in the cgroup (stragglers that escaped the process tree)."""
    drv = _driver()
    if drv is not None and path:
        with contextlib.suppress(OSError, ValueError):
            drv.kill_all(path, KILL_TIMEOUT)


async def drain(path: str, timeout: float = DRAIN_TIMEOUT) -> list[int]:
    """SIGKILL everything in the cgroup (frozen first, or cgroup.kill on v2) until it is empty,
    without blocking the loop between rounds; the pids still there at the deadline ([] when
    it emptied). A process in uninterruptible sleep can outlive SIGKILL for a while."""
    drv = _driver()
    if drv is None or not path:
        return []
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            left = drv.pids(path) if drv.exists(path) else []
        except OSError:
            return []
        if not left or time.monotonic() > deadline:
            return left
        with contextlib.suppress(OSError, ValueError, TimeoutError):
            drv.kill_all(path, KILL_ROUND)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def describe(pids: list[int], limit: int = 5) -> str:
    """'pid 12 (sleep, D), pid 13 (sh, Z)': what a person needs to see why a cgroup is busy."""
    out = []
    for pid in pids[:limit]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, tail = f.read().rpartition(")")
            out.append(f"pid {pid} ({head.partition('(')[2]}, {tail.split()[0]})")
        except (OSError, IndexError):
            out.append(f"pid {pid}")
    more = f" and {len(pids) - limit} more" if len(pids) > limit else ""
    return ", ".join(out) + more


def remove(path: str) -> None:
    """Drop the cgroup once nothing runs in it."""
    drv = _driver()
    if drv is not None and path:
        with contextlib.suppress(FileNotFoundError):
            drv.remove(path)


def stats(path: str) -> dict[str, Any]:
    """Driver stats as a JSON-able dict; empty without a cgroup."""
    drv = _driver()
    if drv is None or not path:
        return {}
    return asdict(drv.stats(path))
