"""cgroup v2 (unified) driver.

Takes its root as a parameter. Its limits, OOM counting, cgroup.kill and PSI run against the real
kernel in the cgroup-v2 guest stage (tests/guest: Debian 6.1, cgroup2 alone at /sys/fs/cgroup);
on the v1-hybrid CI host only the core files are real (the unified mount has no controllers) and
the formats are checked against fake interface files, so keep them in step with cgroup-v2.rst.
"""

from __future__ import annotations

import contextlib
import os
import time

from runtime.cgroups.model import (
    CgroupStats,
    Resources,
    check_path,
    keyed,
    parents_to_remove,
    parse_psi,
    pid_list,
    read,
    rmdir,
    rmdir_parents,
    sigkill_all,
    wait_until,
    write,
)
from runtime.cgroups.statfiles import max_value, number, pick, read_once

WANTED = ("cpu", "cpuset", "io", "memory", "pids", "hugetlb")
DEFAULT_PERIOD = 100000


def shares_to_weight(shares: int) -> int:
    """The kubelet/runc mapping of v1 cpu.shares [2, 262144] onto cpu.weight [1, 10000]."""
    if shares <= 0:
        return 100
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """runc's mapping of OCI/v1 blkio weight [10, 1000] onto io.weight [1, 10000]."""
    weight = min(max(weight, 10), 1000)
    return 1 + (weight - 10) * 9999 // 990


class V2Driver:
    """Drives one unified hierarchy rooted at `root`."""

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        self.root = root

    def _dir(self, path: str) -> str:
        return os.path.join(self.root, check_path(path))

    def _file(self, path: str, name: str) -> str:
        return os.path.join(self._dir(path), name)

    def create(self, path: str, res: Resources) -> None:
        """Delegates controllers down every ancestor, then creates the leaf and applies limits."""
        rel = check_path(path)
        parent = self.root
        for part in rel.split("/"):
            self._delegate(parent)
            parent = os.path.join(parent, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent)
        self.update(rel, res)

    def _delegate(self, cg: str) -> None:
        """Enables in cg's children whichever wanted controllers cg itself has."""
        try:
            have = set(read(os.path.join(cg, "cgroup.controllers")).split())
            enabled = set(read(os.path.join(cg, "cgroup.subtree_control")).split())
        except FileNotFoundError:
            return
        missing = [c for c in WANTED if c in have and c not in enabled]
        if missing:
            write(os.path.join(cg, "cgroup.subtree_control"), " ".join("+" + c for c in missing))

    def update(self, path: str, res: Resources) -> None:
        rel = check_path(path)
        if res.cpu_shares is not None:
            write(self._file(rel, "cpu.weight"), shares_to_weight(res.cpu_shares))
        if res.cpu_quota is not None or res.cpu_period is not None:
            quota = res.cpu_quota if res.cpu_quota is not None and res.cpu_quota > 0 else "max"
            write(self._file(rel, "cpu.max"), f"{quota} {res.cpu_period or DEFAULT_PERIOD}")
        if res.cpuset_cpus:
            write(self._file(rel, "cpuset.cpus"), res.cpuset_cpus)
        if res.cpuset_mems:
            write(self._file(rel, "cpuset.mems"), res.cpuset_mems)
        self._memory(rel, res)
        if res.pids_limit is not None:
            write(self._file(rel, "pids.max"), res.pids_limit if res.pids_limit > 0 else "max")
        for size, limit in res.hugepage_limits.items():
            write(self._file(rel, f"hugetlb.{size}.max"), limit)
        if res.io_weight is not None:
            write(self._file(rel, "io.weight"), f"default {blkio_to_io_weight(res.io_weight)}")
        for lim in res.io_limits:  # one device and key per write; the others keep their value
            write(self._file(rel, "io.max"), f"{lim.major}:{lim.minor} {lim.key}={lim.rate}")
        for key, value in res.unified.items():
            if "/" in key or key.startswith(".") or not key:
                raise ValueError(f"unified key {key!r} is not a cgroup interface file")
            write(self._file(rel, key), value)

    def _memory(self, rel: str, res: Resources) -> None:
        """memory.swap.max holds swap alone, so OCI's memory+swap becomes (swap - memory)."""
        mem, swap = res.memory_limit, res.memory_swap_limit
        if mem is not None:
            write(self._file(rel, "memory.max"), mem if mem > 0 else "max")
        if swap is None:
            return
        if swap <= 0:
            value: int | str = "max"
        elif mem is None or mem <= 0:
            raise ValueError("memory_swap_limit needs a memory_limit on cgroup v2")
        elif swap < mem:
            raise ValueError(f"memory_swap_limit {swap} is below memory_limit {mem}")
        else:
            value = swap - mem
        write(self._file(rel, "memory.swap.max"), value)

    def add_pid(self, path: str, pid: int) -> None:
        write(self._file(path, "cgroup.procs"), pid)

    def join(self, path: str) -> None:
        """Move the calling process into the cgroup."""
        for name in self.join_files(path):
            write(name, 0)

    def join_files(self, path: str) -> list[str]:
        """cgroup.procs: v2 has no cheaper per-thread move outside threaded mode."""
        return [self._file(path, "cgroup.procs")]

    def pids(self, path: str) -> list[int]:
        return pid_list(self._file(path, "cgroup.procs"))

    def oom_kill_count(self, path: str) -> int:
        """From memory.events; read it before remove(), the counter dies with the cgroup."""
        try:
            return keyed(read(self._file(path, "memory.events"))).get("oom_kill", 0)
        except FileNotFoundError:
            return 0

    # Every file may be missing (a controller not enabled, no PSI): a gone cgroup reads as 0s.
    STAT_REQUIRED: frozenset[str] = frozenset()
    _STAT_FILES = ("cpu.stat", "memory.stat", "memory.current", "memory.events", "memory.max",
                   "pids.current", "pids.max", "cpu.pressure", "memory.pressure", "io.pressure")
    _CPU_KEYS = frozenset({"usage_usec", "user_usec", "system_usec", "nr_periods",
                           "nr_throttled", "throttled_usec"})
    _MEMORY_KEYS = frozenset({"inactive_file", "anon", "file", "pgfault", "pgmajfault"})

    def stat_paths(self, path: str) -> dict[str, str]:
        d = self._dir(path)
        return {name: os.path.join(d, name) for name in self._STAT_FILES}

    def stats(self, path: str) -> CgroupStats:
        return self.parse_stats(read_once(self.stat_paths(path), self.STAT_REQUIRED),
                                time.time_ns())

    def parse_stats(self, raw: dict[str, bytes], taken_ns: int) -> CgroupStats:
        """The files of `stat_paths`, read at taken_ns."""
        s = CgroupStats(timestamp_ns=taken_ns)
        cpu = pick(raw.get("cpu.stat"), self._CPU_KEYS)
        s.cpu_usage_ns = cpu.get("usage_usec", 0) * 1000
        s.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        s.cpu_system_ns = cpu.get("system_usec", 0) * 1000
        s.cpu_periods = cpu.get("nr_periods", 0)
        s.cpu_throttled_periods = cpu.get("nr_throttled", 0)
        s.cpu_throttled_ns = cpu.get("throttled_usec", 0) * 1000
        mem = pick(raw.get("memory.stat"), self._MEMORY_KEYS)
        s.memory_usage = number(raw.get("memory.current"))
        s.memory_working_set = max(s.memory_usage - mem.get("inactive_file", 0), 0)
        s.memory_rss = mem.get("anon", 0)
        s.memory_cache = mem.get("file", 0)
        s.page_faults = mem.get("pgfault", 0)
        s.major_page_faults = mem.get("pgmajfault", 0)
        events = pick(raw.get("memory.events"), frozenset({"max", "oom_kill"}))
        s.memory_failcnt = events.get("max", 0)
        s.oom_kill_count = events.get("oom_kill", 0)
        s.memory_limit = max_value(raw.get("memory.max"))
        s.pids_current = number(raw.get("pids.current"))
        s.pids_limit = max_value(raw.get("pids.max"))
        psi = {res: parse_psi(raw[f"{res}.pressure"].decode())
               for res in ("cpu", "memory", "io") if raw.get(f"{res}.pressure")}
        s.psi = psi or None
        return s

    def freeze(self, path: str, timeout: float = 5.0) -> None:
        write(self._file(path, "cgroup.freeze"), 1)
        events = self._file(path, "cgroup.events")
        if os.path.exists(events):
            wait_until(lambda: _keyed_file(events).get("frozen") == 1, timeout, "freeze")

    def thaw(self, path: str) -> None:
        write(self._file(path, "cgroup.freeze"), 0)

    def kill_all(self, path: str, timeout: float = 5.0) -> None:
        """cgroup.kill (5.14+) kills atomically; older kernels get freeze, SIGKILL, thaw."""
        if not self.exists(path):
            return
        kill = self._file(path, "cgroup.kill")
        if os.path.exists(kill):
            write(kill, 1)
        else:
            self.freeze(path, timeout)
            try:
                sigkill_all(self.pids(path))
            finally:
                self.thaw(path)
        events = self._file(path, "cgroup.events")
        if os.path.exists(events):
            wait_until(lambda: _keyed_file(events).get("populated") == 0, timeout, "empty")
        else:
            wait_until(lambda: not self.pids(path), timeout, f"{path} to empty")

    def remove(self, path: str, remove_parents_up_to: str | None = None) -> None:
        """Idempotent; ancestors go only when asked and only while they are empty."""
        rel = check_path(path)
        rmdir(os.path.join(self.root, rel))
        rmdir_parents(self.root, parents_to_remove(rel, remove_parents_up_to))

    def exists(self, path: str) -> bool:
        return os.path.isdir(self._dir(path))


def _keyed_file(path: str) -> dict[str, int]:
    try:
        return keyed(read(path))
    except FileNotFoundError:
        return {}
