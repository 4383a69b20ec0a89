"""The monitor's narrow use of runtime.cgroups: JSON in and out, errors of stragglers ignored."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict
from typing import Any

from runtime import cgroups

KILL_TIMEOUT = 1.0  # kill_all polls synchronously: keep the monitor loop's stall short


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
