"""Types and file helpers shared by the v1 and v2 drivers, so both expose one contract."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as PAGE_COUNTER_MAX pages: anything above this


@dataclass(frozen=True)
class IoLimit:
    """One OCI blockIO throttle: `key` is v2's io.max name (rbps, wbps, riops, wiops)."""

    major: int
    minor: int
    key: str
    rate: int


IO_KEYS = {"throttleReadBpsDevice": "rbps", "throttleWriteBpsDevice": "wbps",
           "throttleReadIOPSDevice": "riops", "throttleWriteIOPSDevice": "wiops"}


@dataclass
class Resources:
    """Limits for one cgroup; None leaves a knob at the kernel default (or as it is on update)."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None  # µs per period; -1 unlimited; None with a period too
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    memory_limit: int | None = None  # bytes; -1 unlimited
    memory_swap_limit: int | None = None  # memory + swap, bytes, as in OCI; -1 unlimited
    pids_limit: int | None = None  # <= 0 unlimited
    hugepage_limits: dict[str, int] = field(default_factory=dict)
    io_weight: int | None = None  # OCI blockIO.weight, 10..1000
    io_limits: list[IoLimit] = field(default_factory=list)
    unified: dict[str, str] = field(default_factory=dict)


@dataclass
class CgroupStats:
    """A point-in-time sample; fields a kernel/cgroup version lacks are 0 (psi: None)."""

    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_throttled_periods: int = 0
    cpu_throttled_ns: int = 0
    cpu_periods: int = 0
    memory_usage: int = 0
    memory_working_set: int = 0
    memory_rss: int = 0
    memory_cache: int = 0
    memory_failcnt: int = 0
    memory_limit: int | None = None
    page_faults: int = 0
    major_page_faults: int = 0
    pids_current: int = 0
    pids_limit: int | None = None
    oom_kill_count: int = 0
    psi: dict[str, dict[str, dict[str, float]]] | None = None
    timestamp_ns: int = 0


class CgroupDriver(Protocol):
    """What container init and the monitor need from a cgroup, whatever the version."""

    def create(self, path: str, res: Resources) -> None: ...
    def add_pid(self, path: str, pid: int) -> None: ...
    def join(self, path: str) -> None: ...
    def join_files(self, path: str) -> list[str]: ...
    def update(self, path: str, res: Resources) -> None: ...
    def stats(self, path: str) -> CgroupStats: ...
    # For samplers that keep the files open (statfiles.StatFiles): stats() is
    # parse_stats(the files of stat_paths(path) read once).
    STAT_REQUIRED: frozenset[str]
    def stat_paths(self, path: str) -> dict[str, str]: ...
    def parse_stats(self, raw: dict[str, bytes], taken_ns: int) -> CgroupStats: ...
    def pids(self, path: str) -> list[int]: ...
    def oom_kill_count(self, path: str) -> int: ...
    def freeze(self, path: str) -> None: ...
    def thaw(self, path: str) -> None: ...
    def kill_all(self, path: str, timeout: float = 5.0) -> None: ...
    def remove(self, path: str, remove_parents_up_to: str | None = None) -> None: ...
    def exists(self, path: str) -> bool: ...


def check_path(path: str) -> str:
    """Refuses absolute paths and '..' so a cgroup path cannot escape the hierarchy."""
    parts = [p for p in path.split("/") if p]
    if not parts or path.startswith("/") or any(p in (".", "..") for p in parts):
        raise ValueError(f"cgroup path {path!r} must be relative, without '.' or '..'")
    return "/".join(parts)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def write(path: str, value: str | int) -> None:
    """One write(2) per value: cgroup files parse each write as one command."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def keyed(text: str) -> dict[str, int]:
    """Parses 'key value' lines (memory.stat, cpu.stat, memory.events, oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_int(path: str, default: int = 0) -> int:
    try:
        return int(read(path).split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return default


def pid_list(path: str) -> list[int]:
    try:
        return [int(x) for x in read(path).split()]
    except FileNotFoundError:
        return []


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls with a short back-off; cgroup state changes are asynchronous but quick."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"cgroup: timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def sigkill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def rmdir(path: str, timeout: float = 1.0) -> None:
    """Removes one cgroup dir; EBUSY right after a kill is retried while tasks finish exiting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def parents_to_remove(path: str, up_to: str | None) -> list[str]:
    """Ancestors of `path` strictly below `up_to`, deepest first; none when up_to is None."""
    if up_to is None:
        return []
    stop = check_path(up_to)
    if not path.startswith(stop + "/"):
        raise ValueError(f"{up_to!r} is not an ancestor of {path!r}")
    out = []
    parent = path.rsplit("/", 1)[0]
    while parent != stop:
        out.append(parent)
        parent = parent.rsplit("/", 1)[0]
    return out


def rmdir_parents(base: str, parents: list[str]) -> None:
    """Removes empty ancestors; one that still has children stops the climb, quietly."""
    for rel in parents:
        try:
            os.rmdir(os.path.join(base, rel))
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EBUSY):
                return
            raise


def parse_psi(text: str) -> dict[str, dict[str, float]]:
    """'some avg10=0.00 avg60=0.00 avg300=0.00 total=0' -> {'some': {'avg10': 0.0, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        out[kind] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
    return out
