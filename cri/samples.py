"""One sample of every pod and container, read straight from cgroup files and /proc.

berthd reads the files itself rather than asking the monitor per container: a cgroup file read
costs microseconds and needs no fork or round trip, so a 100-container scrape stays cheap.
The /metrics collector and the CRI stats RPCs share this sampler (and its CPU-rate memory).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cri.context import Context
from cri.store import ContainerRecord, PodRecord
from proto import api_pb2 as pb
from runtime import cgroups
from runtime.bundle import Bundle
from runtime.cgroups import CgroupStats, V1Driver
from runtime.cgroups.model import UNLIMITED_V1, check_path, keyed
from runtime.monitor.state import ContainerState

USER_HZ = os.sysconf("SC_CLK_TCK")
RATE_WINDOW_NS = 1_000_000_000  # keep a CPU baseline at least this old, so rates are not noise


@dataclass
class Iface:
    """Counters of one pod interface, as /proc/<pid>/net/dev inside the pod's netns shows."""

    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


@dataclass
class ContainerSample:
    rec: ContainerRecord
    cfg: pb.ContainerConfig
    state: ContainerState | None
    cgroup: str
    cg: CgroupStats | None  # None once the cgroup is gone (the container exited)
    page_faults: int = 0
    major_page_faults: int = 0
    fs_bytes: int = 0
    fs_inodes: int = 0
    nano_cores: int | None = None
    taken_ns: int = 0

    @property
    def running(self) -> bool:
        return self.state is not None and self.state.status == "running"

    @property
    def oom_events(self) -> int:
        """The cgroup counter, or 1 for an exited container the monitor saw OOM-killed."""
        counted = self.cg.oom_kill_count if self.cg else 0
        if self.state is not None and self.state.reason == "OOMKilled":
            counted = max(counted, 1)
        return counted


@dataclass
class PodSample:
    rec: PodRecord
    cfg: pb.PodSandboxConfig
    cgroup_parent: str
    containers: list[ContainerSample] = field(default_factory=list)
    interfaces: list[Iface] | None = None  # None: no running process to read the netns through
    taken_ns: int = 0


def parse_net_dev(text: str) -> list[Iface]:
    """Every interface but loopback, in file order."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        if name.strip() == "lo" or len(cols) < 16:
            continue
        out.append(Iface(name.strip(), int(cols[0]), int(cols[2]), int(cols[8]), int(cols[10])))
    return out


class Sampler:
    """Takes samples; remembers an older CPU reading per id for usage_nano_cores."""

    def __init__(self, ctx: Context, fs_ttl: float = 0.0) -> None:
        self.ctx = ctx
        self.fs_ttl = fs_ttl
        self.driver = cgroups.driver(ctx.config.runtime.cgroup_root)
        self.fs_mount = str(Path(ctx.config.state_dir) / "bundles")
        self._cpu_base: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._fs: dict[str, tuple[float, int, int]] = {}

    async def states(self) -> dict[str, ContainerState]:
        """One monitor round trip for all containers; an unreachable monitor means no states."""
        try:
            return {s.id: s for s in await self.ctx.monitor.list()}
        except (ConnectionError, OSError):
            return {}

    async def pods(self, pod_ids: set[str] | None = None,
                   container_ids: set[str] | None = None) -> list[PodSample]:
        """Samples of the chosen pods (all when None), with their chosen containers."""
        states = await self.states()
        now = time.time_ns()
        by_pod: dict[str, PodSample] = {}
        for prec in self.ctx.store.pods.scan():
            if pod_ids is not None and prec.id not in pod_ids:
                continue
            parent = str(prec.extra.get("cgroup_parent") or "berth").strip("/")
            by_pod[prec.id] = PodSample(prec, pb.PodSandboxConfig.FromString(prec.config),
                                        parent, taken_ns=now)
        records = self.ctx.store.containers.scan()
        alive = {r.id for r in records}
        self._cpu_base = {k: v for k, v in self._cpu_base.items() if k in alive}
        self._fs = {k: v for k, v in self._fs.items() if k in alive}
        for crec in records:
            pod = by_pod.get(crec.pod_id)
            if pod is None or (container_ids is not None and crec.id not in container_ids):
                continue
            pod.containers.append(self.container(crec, states.get(crec.id), pod.cgroup_parent))
        for pod in by_pod.values():
            pod.interfaces = self.interfaces(pod)
        return list(by_pod.values())

    def container(self, rec: ContainerRecord, st: ContainerState | None,
                  parent: str) -> ContainerSample:
        path = (st.cgroup_path if st and st.cgroup_path else f"{parent}/{rec.id}").strip("/")
        cfg = pb.ContainerConfig.FromString(rec.config)
        cg: CgroupStats | None = None
        faults: dict[str, int] = {}
        if st is not None:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                cg, faults = self._cgroup(path, cfg.linux.resources.cpu_quota > 0)
        fs_bytes, fs_inodes = self._fs_usage(rec.id)
        sample = ContainerSample(rec, cfg, st, path, cg,
                                 page_faults=faults.get("pgfault", 0),
                                 major_page_faults=faults.get("pgmajfault", 0),
                                 fs_bytes=fs_bytes, fs_inodes=fs_inodes,
                                 taken_ns=cg.timestamp_ns if cg else time.time_ns())
        if cg is not None:
            sample.nano_cores = self._rate(rec.id, cg.timestamp_ns, cg.cpu_usage_ns)
        return sample

    def _fs_usage(self, cid: str) -> tuple[int, int]:
        """Walking the upper dir is the priciest read: /metrics redoes it every fs_ttl s only."""
        if self.fs_ttl <= 0:
            return Bundle(self.ctx.bundle_dir(cid)).usage()
        now = time.monotonic()
        hit = self._fs.get(cid)
        if hit is None or now - hit[0] >= self.fs_ttl:
            hit = self._fs[cid] = (now, *Bundle(self.ctx.bundle_dir(cid)).usage())
        return hit[1], hit[2]

    def _cgroup(self, path: str, quota: bool) -> tuple[CgroupStats, dict[str, int]]:
        """v1 through the lean reader below; v2 through the driver plus memory.stat."""
        if isinstance(self.driver, V1Driver):
            return v1_stats(self.driver.mounts, check_path(path), quota)
        stats = self.driver.stats(path)
        mem = keyed(_read(os.path.join(self.ctx.config.runtime.cgroup_root, path,
                                       "memory.stat")))
        return stats, mem

    def _rate(self, cid: str, ts: int, usage: int) -> int | None:
        """Cores in use against the older of two baselines, which advance a window apart."""
        older, newer = self._cpu_base.get(cid, ((ts, usage), (ts, usage)))
        if usage < older[1]:  # the counter restarted (a new cgroup under the same id)
            older = newer = (ts, usage)
        if ts - newer[0] >= RATE_WINDOW_NS:
            older, newer = newer, (ts, usage)
        self._cpu_base[cid] = (older, newer)
        dt = ts - older[0]
        return (usage - older[1]) * 10**9 // dt if dt > 0 else None

    def interfaces(self, pod: PodSample) -> list[Iface] | None:
        """Read through a process in the pod's netns; never setns in threaded berthd."""
        if pod.rec.extra.get("host_network") or not pod.rec.extra.get("ns"):
            return None
        for c in pod.containers:
            if c.running and c.state is not None and c.state.pid:
                with contextlib.suppress(OSError):
                    return parse_net_dev(Path(f"/proc/{c.state.pid}/net/dev").read_text())
        return None


def _read(path: str) -> str:
    """One open+read with no text-layer set-up: most of a cgroup file's cost is the open."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def v1_stats(mounts: dict[str, str], rel: str,
             quota: bool) -> tuple[CgroupStats, dict[str, int]]:
    """The driver's figures from 7-8 reads instead of 13 (memory.stat gives limit and faults).

    The limit is memory.stat's hierarchical_memory_limit: the one in force, ancestors included.
    cpu.stat (throttling) is read only for a container with a CFS quota, as cAdvisor reports it.
    """
    s = CgroupStats(timestamp_ns=time.time_ns())
    if "cpuacct" in mounts:
        acct = os.path.join(mounts["cpuacct"], rel)
        s.cpu_usage_ns = int(_read(os.path.join(acct, "cpuacct.usage")))
        ticks = keyed(_read(os.path.join(acct, "cpuacct.stat")))
        s.cpu_user_ns = ticks.get("user", 0) * 10**9 // USER_HZ
        s.cpu_system_ns = ticks.get("system", 0) * 10**9 // USER_HZ
    if quota and "cpu" in mounts:
        cpu = keyed(_read(os.path.join(mounts["cpu"], rel, "cpu.stat")))
        s.cpu_periods = cpu.get("nr_periods", 0)
        s.cpu_throttled_periods = cpu.get("nr_throttled", 0)
        s.cpu_throttled_ns = cpu.get("throttled_time", 0)
    mem: dict[str, int] = {}
    if "memory" in mounts:
        d = os.path.join(mounts["memory"], rel)
        mem = keyed(_read(os.path.join(d, "memory.stat")))
        s.memory_usage = int(_read(os.path.join(d, "memory.usage_in_bytes")))
        s.memory_working_set = max(s.memory_usage - mem.get("total_inactive_file", 0), 0)
        s.memory_rss = mem.get("total_rss", 0)
        s.memory_cache = mem.get("total_cache", 0)
        s.memory_failcnt = int(_read(os.path.join(d, "memory.failcnt")))
        limit = mem.get("hierarchical_memory_limit", UNLIMITED_V1)
        s.memory_limit = limit if limit < UNLIMITED_V1 else None
        s.oom_kill_count = keyed(_read(os.path.join(d, "memory.oom_control"))).get("oom_kill", 0)
    if "pids" in mounts:
        s.pids_current = int(_read(os.path.join(mounts["pids"], rel, "pids.current")))
    faults = {k: mem.get(f"total_{k}", 0) for k in ("pgfault", "pgmajfault")}
    return s, faults


def pod_processes(pod: PodSample) -> int:
    """Processes in all the pod's containers, from each cgroup's pids.current."""
    return sum(c.cg.pids_current for c in pod.containers if c.cg is not None)
