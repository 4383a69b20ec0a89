"""cgroup v1 driver: one directory per controller hierarchy under /sys/fs/cgroup.

Without CAP_SYS_RESOURCE (this machine) every knob we set still works: the cgroup files check
only write permission on the file, so nothing here needs it. Not every hierarchy exists on
every host (hugetlb is absent here): missing ones are skipped, and limits for them ignored.
`unified` keys are cgroup v2 only and ignored here.
"""

from __future__ import annotations

import contextlib
import os
import time

from runtime.cgroups.model import (
    UNLIMITED_V1,
    CgroupStats,
    Resources,
    check_path,
    keyed,
    parents_to_remove,
    pid_list,
    read,
    read_int,
    rmdir,
    rmdir_parents,
    sigkill_all,
    wait_until,
    write,
)
from runtime.cgroups.statfiles import max_value, number, pick, read_once

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
               "hugetlb", "systemd")
USER_HZ = os.sysconf("SC_CLK_TCK")
V1_IO_FILES = {"rbps": "read_bps", "wbps": "write_bps", "riops": "read_iops",
               "wiops": "write_iops"}


class V1Driver:
    """Keeps a hierarchy per controller in step; co-mounted controllers are visited once."""

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        self.root = root
        self.mounts = {
            ctrl: os.path.join(root, ctrl)
            for ctrl in CONTROLLERS
            if os.path.isfile(os.path.join(root, ctrl, "cgroup.procs"))
        }
        self.hierarchies = sorted({os.path.realpath(b) for b in self.mounts.values()})

    def _dir(self, ctrl: str, path: str) -> str:
        return os.path.join(self.mounts[ctrl], check_path(path))

    def _file(self, ctrl: str, path: str, name: str) -> str:
        return os.path.join(self._dir(ctrl, path), name)

    def create(self, path: str, res: Resources) -> None:
        rel = check_path(path)
        for base in self.hierarchies:
            os.makedirs(os.path.join(base, rel), exist_ok=True)
        if "cpuset" in self.mounts:
            self._fill_cpuset(rel)
        self.update(rel, res)

    def _fill_cpuset(self, rel: str) -> None:
        """New cpuset dirs start with empty cpus/mems and refuse tasks until filled from above."""
        parent = self.mounts["cpuset"]
        for part in rel.split("/"):
            child = os.path.join(parent, part)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if not read(os.path.join(child, knob)).strip():
                    write(os.path.join(child, knob), read(os.path.join(parent, knob)).strip())
            parent = child

    def update(self, path: str, res: Resources) -> None:
        rel = check_path(path)
        if "cpu" in self.mounts:
            if res.cpu_shares is not None:
                write(self._file("cpu", rel, "cpu.shares"), res.cpu_shares)
            if res.cpu_period is not None:
                write(self._file("cpu", rel, "cpu.cfs_period_us"), res.cpu_period)
            if res.cpu_quota is not None or res.cpu_period is not None:
                quota = res.cpu_quota if res.cpu_quota is not None and res.cpu_quota > 0 else -1
                write(self._file("cpu", rel, "cpu.cfs_quota_us"), quota)
        if "cpuset" in self.mounts:
            if res.cpuset_cpus:
                write(self._file("cpuset", rel, "cpuset.cpus"), res.cpuset_cpus)
            if res.cpuset_mems:
                write(self._file("cpuset", rel, "cpuset.mems"), res.cpuset_mems)
        if "memory" in self.mounts:
            self._memory(rel, res)
        if "pids" in self.mounts and res.pids_limit is not None:
            pids_max = str(res.pids_limit) if res.pids_limit > 0 else "max"
            write(self._file("pids", rel, "pids.max"), pids_max)
        if "blkio" in self.mounts:
            self._blkio(rel, res)
        if "hugetlb" in self.mounts:
            for size, limit in res.hugepage_limits.items():
                write(self._file("hugetlb", rel, f"hugetlb.{size}.limit_in_bytes"), limit)

    def _blkio(self, rel: str, res: Resources) -> None:
        """Throttles always exist; blkio.weight only under the BFQ/CFQ schedulers."""
        if res.io_weight is not None:
            for name in ("blkio.weight", "blkio.bfq.weight"):
                if os.path.exists(self._file("blkio", rel, name)):
                    write(self._file("blkio", rel, name), res.io_weight)
                    break
        for lim in res.io_limits:
            name = f"blkio.throttle.{V1_IO_FILES[lim.key]}_device"
            write(self._file("blkio", rel, name), f"{lim.major}:{lim.minor} {lim.rate}")

    def _memory(self, rel: str, res: Resources) -> None:
        """memsw must stay >= memory after every write, so the order follows the direction."""
        mem = _limit(res.memory_limit)
        swap = _limit(res.memory_swap_limit)
        limit_file = self._file("memory", rel, "memory.limit_in_bytes")
        memsw_file = self._file("memory", rel, "memory.memsw.limit_in_bytes")
        if not os.path.exists(memsw_file):
            swap = None  # no swap accounting on this kernel
        elif swap is None and mem is not None and _big(mem) > read_int(memsw_file):
            swap = -1
        if swap is not None and _big(swap) >= read_int(limit_file):
            write(memsw_file, swap)
            swap = None
        if mem is not None:
            write(limit_file, mem)
        if swap is not None:
            write(memsw_file, swap)

    def add_pid(self, path: str, pid: int) -> None:
        rel = check_path(path)
        for base in self.hierarchies:
            write(os.path.join(base, rel, "cgroup.procs"), pid)

    def join(self, path: str) -> None:
        """Move the calling single-threaded process into the cgroup."""
        for name in self.join_files(path):
            write(name, 0)

    def join_files(self, path: str) -> list[str]:
        """Where a single-threaded process writes "0" to join: `tasks` moves just the caller's
        thread, which skips the global threadgroup lock a cgroup.procs write takes; that lock's
        write side waits an RCU grace period (measured here: 0.7 ms against 7-27 ms)."""
        rel = check_path(path)
        return [os.path.join(base, rel, "tasks") for base in self.hierarchies]

    def pids(self, path: str) -> list[int]:
        ctrl = "freezer" if "freezer" in self.mounts else next(iter(self.mounts))
        return pid_list(self._file(ctrl, path, "cgroup.procs"))

    def oom_kill_count(self, path: str) -> int:
        """Read before remove(): the counter lives in the cgroup and dies with it."""
        try:
            return keyed(read(self._file("memory", path, "memory.oom_control"))).get("oom_kill", 0)
        except FileNotFoundError:
            return 0

    # Files whose absence means the cgroup is gone (the others may lack on older kernels).
    STAT_REQUIRED = frozenset({"cpuacct.stat", "cpu.stat", "memory.stat", "pids.max"})
    _STAT_FILES = (("cpuacct", "cpuacct.usage"), ("cpuacct", "cpuacct.stat"),
                   ("cpu", "cpu.stat"), ("memory", "memory.stat"),
                   ("memory", "memory.usage_in_bytes"), ("memory", "memory.failcnt"),
                   ("memory", "memory.oom_control"), ("pids", "pids.current"),
                   ("pids", "pids.max"))
    _MEMORY_KEYS = frozenset({"total_inactive_file", "total_rss", "total_cache",
                              "hierarchical_memory_limit", "total_pgfault", "total_pgmajfault"})

    def stat_paths(self, path: str) -> dict[str, str]:
        """Few files, since /metrics and the stats RPCs read them per container per call:
        memory.stat gives the limit in force (hierarchical_memory_limit, ancestors included)
        and the page faults."""
        rel = check_path(path)
        return {name: os.path.join(self.mounts[ctrl], rel, name)
                for ctrl, name in self._STAT_FILES if ctrl in self.mounts}

    def stats(self, path: str) -> CgroupStats:
        return self.parse_stats(read_once(self.stat_paths(path), self.STAT_REQUIRED),
                                time.time_ns())

    def parse_stats(self, raw: dict[str, bytes], taken_ns: int) -> CgroupStats:
        """The files of `stat_paths`, read at taken_ns; a controller not mounted stays 0."""
        s = CgroupStats(timestamp_ns=taken_ns)
        s.cpu_usage_ns = number(raw.get("cpuacct.usage"))
        ticks = pick(raw.get("cpuacct.stat"), frozenset({"user", "system"}))
        s.cpu_user_ns = ticks.get("user", 0) * 10**9 // USER_HZ
        s.cpu_system_ns = ticks.get("system", 0) * 10**9 // USER_HZ
        cpu = pick(raw.get("cpu.stat"),
                   frozenset({"nr_periods", "nr_throttled", "throttled_time"}))
        s.cpu_periods = cpu.get("nr_periods", 0)
        s.cpu_throttled_periods = cpu.get("nr_throttled", 0)
        s.cpu_throttled_ns = cpu.get("throttled_time", 0)
        if "memory.stat" in raw:
            stat = pick(raw["memory.stat"], self._MEMORY_KEYS)
            s.memory_usage = number(raw.get("memory.usage_in_bytes"))
            s.memory_working_set = max(s.memory_usage - stat.get("total_inactive_file", 0), 0)
            s.memory_rss = stat.get("total_rss", 0)
            s.memory_cache = stat.get("total_cache", 0)
            s.memory_failcnt = number(raw.get("memory.failcnt"))
            mem_limit = stat.get("hierarchical_memory_limit", UNLIMITED_V1)
            s.memory_limit = mem_limit if mem_limit < UNLIMITED_V1 else None
            s.page_faults = stat.get("total_pgfault", 0)
            s.major_page_faults = stat.get("total_pgmajfault", 0)
            s.oom_kill_count = pick(raw.get("memory.oom_control"),
                                    frozenset({"oom_kill"})).get("oom_kill", 0)
        if "pids.max" in raw:
            s.pids_current = number(raw.get("pids.current"))
            s.pids_limit = max_value(raw["pids.max"])
        return s

    def freeze(self, path: str, timeout: float = 5.0) -> None:
        state = self._file("freezer", path, "freezer.state")
        write(state, "FROZEN")
        wait_until(lambda: read(state).strip() == "FROZEN", timeout, f"{path} to freeze")

    def thaw(self, path: str) -> None:
        write(self._file("freezer", path, "freezer.state"), "THAWED")

    def kill_all(self, path: str, timeout: float = 5.0) -> None:
        """Freezing first stops a fork loop from outrunning the kill."""
        if not self.exists(path):
            return
        frozen = "freezer" in self.mounts
        if frozen:
            # A task stuck in D state can keep the cgroup FREEZING: kill anyway, it dies on thaw.
            with contextlib.suppress(TimeoutError):
                self.freeze(path, timeout / 2)
        try:
            sigkill_all(self.pids(path))
        finally:
            if frozen:
                self.thaw(path)
        wait_until(lambda: not self.pids(path), timeout, f"{path} to empty")

    def remove(self, path: str, remove_parents_up_to: str | None = None) -> None:
        """Idempotent; ancestors go only when asked and only while they are empty."""
        rel = check_path(path)
        parents = parents_to_remove(rel, remove_parents_up_to)
        for base in self.hierarchies:
            rmdir(os.path.join(base, rel))
            rmdir_parents(base, parents)

    def exists(self, path: str) -> bool:
        rel = check_path(path)
        return any(os.path.isdir(os.path.join(b, rel)) for b in self.hierarchies)



def _limit(value: int | None) -> int | None:
    """OCI uses -1 (and we accept 0) for unlimited; v1 files take -1."""
    if value is None:
        return None
    return value if value > 0 else -1


def _big(value: int) -> int:
    return UNLIMITED_V1 * 2 if value == -1 else value
