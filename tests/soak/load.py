"""Many pods at once: every RPC keeps answering and ListContainers stays fast.

Run: .venv/bin/python -m tests.soak.load --pods 100 --calls 200
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, remove_all_pods, sandbox_config
from tests.soak.churn import environment
from tests.soak.leaks import Snapshot, monitor_pid, remove_cgroup_parent, rss_kb, snapshot

P99_BOUND_S = 0.100  # the bound for ListContainers with 100 pods running


@dataclass
class LoadResult:
    """Setup/teardown time, per-RPC latencies under load, errors and leak counts."""

    pods: int
    setup_s: float = 0.0
    teardown_s: float = 0.0
    running: int = 0
    rss_kb: int = 0
    list_cpu_ms: float = 0.0  # berthd + monitor CPU per ListContainers: load-independent
    latency: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    before: Snapshot | None = None
    after: Snapshot | None = None

    def p(self, rpc: str, q: int) -> float:
        """q-th percentile in seconds."""
        xs = self.latency[rpc]
        return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]

    @property
    def leaks(self) -> dict[str, int]:
        assert self.before is not None and self.after is not None
        return self.after.minus(self.before)

    def report(self) -> str:
        lines = [f"load: {self.pods} pods ({self.running} containers RUNNING), setup "
                 f"{self.setup_s:.1f}s, teardown {self.teardown_s:.1f}s, berthd RSS "
                 f"{self.rss_kb} KiB under load; ListContainers costs berthd+monitor "
                 f"{self.list_cpu_ms:.1f} ms CPU per call",
                 f"errors: {len(self.errors)}" + "".join(f"\n  {e}" for e in self.errors[:10])]
        for rpc, xs in self.latency.items():
            lines.append(f"  {rpc:<20} n={len(xs):<4} p50 {self.p(rpc, 50) * 1e3:7.1f} ms  "
                         f"p99 {self.p(rpc, 99) * 1e3:7.1f} ms  max {max(xs) * 1e3:7.1f} ms")
        if self.before is not None and self.after is not None:
            lines.append("leaked: " + " ".join(f"{k}={v}" for k, v in self.leaks.items()))
        return "\n".join(lines)


def start_pods(d: Berthd, image: str, n: int, log_dir: Path, parent: str,
               clients: int, res: LoadResult) -> list[tuple[str, str]]:
    """n pods with one `sleep` container each, created by `clients` threads in parallel."""
    out: list[tuple[str, str]] = []
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        with CriClient(d.endpoint) as cli:
            pb, rt = cli.pb, cli.runtime
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    cfg = sandbox_config(cli, f"load-{i}", str(log_dir),
                                         linux=pb.LinuxPodSandboxConfig(cgroup_parent=parent))
                    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                           timeout=120).pod_sandbox_id
                    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleep"),
                                              image=pb.ImageSpec(image=image),
                                              command=["sleep", "3600"], log_path=f"{i}.log")
                    cid = rt.CreateContainer(pb.CreateContainerRequest(
                        pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg),
                        timeout=120).container_id
                    rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
                except grpc.RpcError as e:
                    with lock:
                        res.errors.append(f"pod {i}: {e.code().name} {e.details()}")
                    continue
                with lock:
                    out.append((pod, cid))

    threads = [threading.Thread(target=worker, name=f"load-{k}") for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def probes(cli: CriClient, pod: str, cid: str) -> dict[str, Callable[[], Any]]:
    """One call of each RPC kubelet makes on a busy node (reads, stats, an exec)."""
    pb, rt = cli.pb, cli.runtime
    return {
        "ListContainers": lambda: rt.ListContainers(pb.ListContainersRequest(), timeout=10),
        "ListPodSandbox": lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10),
        "ContainerStatus": lambda: rt.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=10),
        "PodSandboxStatus": lambda: rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10),
        "ListContainerStats": lambda: rt.ListContainerStats(
            pb.ListContainerStatsRequest(), timeout=10),
        "Status": lambda: rt.Status(pb.StatusRequest(), timeout=10),
        "Version": lambda: cli.version(timeout=10),
        "ListImages": lambda: cli.image.ListImages(pb.ListImagesRequest(), timeout=10),
        "ExecSync": lambda: rt.ExecSync(pb.ExecSyncRequest(
            container_id=cid, cmd=["true"], timeout=10), timeout=20),
    }


def cpu_s(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            ticks += sum(int(x) for x in stat[stat.rindex(")") + 2 :].split()[11:13])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(cli: CriClient, pod: str, cid: str, calls: int, res: LoadResult,
            server: list[int]) -> None:
    """`calls` ListContainers (the figure); 20 of every other RPC (they must answer)."""
    for name, call in probes(cli, pod, cid).items():
        xs = res.latency.setdefault(name, [])
        cpu0 = cpu_s(server)
        for _ in range(calls if name == "ListContainers" else 20):
            t0 = time.monotonic()
            try:
                call()
            except grpc.RpcError as e:
                res.errors.append(f"{name}: {e.code().name} {e.details()}")
                continue
            xs.append(time.monotonic() - t0)
        if name == "ListContainers" and xs:
            res.list_cpu_ms = (cpu_s(server) - cpu0) * 1e3 / len(xs)


def run_load(d: Berthd, image: str, pods: int, log_dir: Path, calls: int = 200,
             clients: int = 4) -> LoadResult:
    """Start the pods, check they all run, measure, remove them all, count leaks."""
    res = LoadResult(pods)
    parent = f"berthload{random.getrandbits(24):06x}"
    assert d.proc is not None
    try:
        with CriClient(d.endpoint) as cli:
            pb = cli.pb
            cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
            warm = LoadResult(1)  # lazily opened fds and pools are not leaks
            for pod, cid in start_pods(d, image, 1, log_dir, parent, 1, warm):
                measure(cli, pod, cid, 2, warm, [])
            remove_all_pods(cli)
            res.before = snapshot(d, parent)
            t0 = time.monotonic()
            made = start_pods(d, image, pods, log_dir, parent, clients, res)
            res.setup_s = time.monotonic() - t0
            listed = cli.runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers
            res.running = sum(c.state == pb.CONTAINER_RUNNING for c in listed)
            res.rss_kb = rss_kb(d.proc.pid)
            if made:
                measure(cli, *made[len(made) // 2], calls, res, [d.proc.pid, monitor_pid(d)])
            t0 = time.monotonic()
            remove_all_pods(cli, timeout=600)
            res.teardown_s = time.monotonic() - t0
            res.after = snapshot(d, parent)
    finally:  # pods a failed step left behind hold cgroups below the parent
        with contextlib.suppress(grpc.RpcError), CriClient(d.endpoint) as cli:
            remove_all_pods(cli)
        remove_cgroup_parent(parent)
    return res


def main(argv: list[str] | None = None) -> int:
    """Print the figures; exit 1 on errors, leaks or a ListContainers p99 over 100 ms."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="berth-load-") as tmp:
        logs = Path(tmp, "logs")
        logs.mkdir()
        with environment(Path(tmp)) as (d, image):
            res = run_load(d, image, args.pods, logs, args.calls, args.clients)
    print(res.report())
    bad = (res.errors or res.running != args.pods or any(res.leaks.values())
           or res.p("ListContainers", 99) >= P99_BOUND_S)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
