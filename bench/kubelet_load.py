"""kubelet's steady-state load on a full node, berthd vs containerd 1.6 in the same run.

Run: nice -n -15 .venv/bin/python -m bench.kubelet_load [--pods 100] [--duration 300]

Both runtimes get `pods` pods of two busybox sleepers each, then both are driven at once (one
driver thread set per runtime, so background load hits both alike) with what kubelet sends:
- every 1 s, ListPodSandbox and ListContainers (PLEG relist), and a ContainerStatus for each
  container whose state changed since the last relist;
- every 10 s, ListContainerStats, ListPodSandboxStats and ImageFsInfo;
- an ExecSync probe (`true`) every 10 s for a third of the containers, spread over the period.
Reported: the runtime's CPU seconds over the window (daemon and every helper: berthd, the node
monitor and the CNI plugin server; containerd and its shims), RSS at the end, and p50/p99 of
each polled call, with ratios berth / containerd.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import _label as label
from bench.env import cpu_seconds, daemon_pids, environment, rss_kib
from bench.harness import Peer
from bench.pods import Pod, remove_pod, run_pod, start_container
from tests.fixtures.cri_client import CriClient

POLLED = ("ListPodSandbox", "ListContainers", "ListContainerStats", "ListPodSandboxStats",
          "ImageFsInfo", "ExecSync", "ContainerStatus")


@dataclass
class Load:
    """One runtime's figures over the window."""

    cpu: float = 0.0
    cpu_by: dict[str, float] = field(default_factory=dict)  # program -> CPU seconds
    rss_mib: float = 0.0
    ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def _populate(peer: Peer, pods: int, logs: Path) -> list[Pod]:
    def one(_: int) -> Pod:
        pod = run_pod(peer, logs)
        start_container(pod)
        start_container(pod)
        return pod

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(pods)))


def _every(period: float, stop: threading.Event, fn: Callable[[], None]) -> None:
    """fn at a fixed rate (not a fixed gap), as kubelet's tickers run."""
    nxt = time.monotonic()
    while not stop.is_set():
        fn()
        nxt += period
        stop.wait(max(0.0, nxt - time.monotonic()))


def drive(peer: Peer, endpoint: str, pods: list[Pod], duration: float) -> Load:
    """The three kubelet loops against one runtime for `duration` seconds."""
    out = Load()
    stop = threading.Event()
    lock = threading.Lock()
    containers = [c for p in pods for c in p.containers]
    probed = containers[::3]

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # counted and reported: a load test must not stop on one
            with lock:
                out.errors.append(f"{name}: {exc}")
            return None
        finally:
            with lock:
                out.ms.setdefault(name, []).append((time.perf_counter() - t0) * 1000)

    def loop(kind: str) -> None:
        with CriClient(endpoint, f"kubelet-{kind}") as cli:
            rt, img, pb = cli.runtime, cli.image, cli.pb
            last: dict[str, int] = {}

            def relist() -> None:
                timed("ListPodSandbox", lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest(),
                                                                  timeout=30))
                got = timed("ListContainers", lambda: rt.ListContainers(
                    pb.ListContainersRequest(), timeout=30))
                now = {c.id: c.state for c in got.containers} if got is not None else last
                for cid in [k for k, v in now.items() if last and last.get(k) != v]:
                    timed("ContainerStatus", functools.partial(
                        rt.ContainerStatus, pb.ContainerStatusRequest(container_id=cid),
                        timeout=30))
                last.clear()
                last.update(now)

            def stats() -> None:
                timed("ListContainerStats", lambda: rt.ListContainerStats(
                    pb.ListContainerStatsRequest(), timeout=30))
                timed("ListPodSandboxStats", lambda: rt.ListPodSandboxStats(
                    pb.ListPodSandboxStatsRequest(), timeout=30))
                timed("ImageFsInfo", lambda: img.ImageFsInfo(pb.ImageFsInfoRequest(),
                                                             timeout=30))

            turn = iter(range(1 << 62))

            def probe() -> None:
                cid = probed[next(turn) % len(probed)]
                timed("ExecSync", lambda: rt.ExecSync(pb.ExecSyncRequest(
                    container_id=cid, cmd=["true"], timeout=10), timeout=30))

            if kind == "pleg":
                _every(1.0, stop, relist)
            elif kind == "stats":
                _every(10.0, stop, stats)
            elif probed:
                _every(10.0 / len(probed), stop, probe)

    pids = daemon_pids(peer)
    c0 = {pid: cpu_seconds([pid]) for pid in pids}
    threads = [threading.Thread(target=loop, args=(k,)) for k in ("pleg", "stats", "probe")]
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    pids = daemon_pids(peer)  # a process that started meanwhile counts from zero
    for pid in pids:
        used = cpu_seconds([pid]) - c0.get(pid, 0.0)
        out.cpu_by[label(pid)] = out.cpu_by.get(label(pid), 0.0) + used
        out.cpu += used
    out.rss_mib = rss_kib(pids) / 1024
    return out


def report(loads: dict[str, Load], pods: int, duration: float) -> None:
    b, c = loads["berth"], loads["containerd"]
    print(f"kubelet steady-state load: {pods} pods x 2 containers each, {duration:.0f} s")
    print("| figure | berth | containerd | ratio |\n|---|---|---|---|")
    print(f"| CPU seconds (daemon + helpers) | {b.cpu:.2f} | {c.cpu:.2f} | {b.cpu / c.cpu:.2f} |")
    print(f"| RSS MiB (daemon + helpers) | {b.rss_mib:.0f} | {c.rss_mib:.0f} | "
          f"{b.rss_mib / c.rss_mib:.2f} |")
    for name in POLLED:
        bx, cx = b.ms.get(name, []), c.ms.get(name, [])
        if bx and cx:
            print(f"| {name} p50 / p99 ms (n={len(bx)}/{len(cx)}) | {_p(bx, .5):.2f} / "
                  f"{_p(bx, .99):.2f} | {_p(cx, .5):.2f} / {_p(cx, .99):.2f} | "
                  f"{_p(bx, .99) / _p(cx, .99):.2f} (p99) |")
    for name, load in loads.items():
        print(f"{name} CPU seconds by program: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(load.cpu_by.items(), key=lambda kv: -kv[1])))
        if load.errors:
            print(f"{name}: {len(load.errors)} errors, first: {load.errors[0]}")
    print(f"all polled calls p99: berth {_p([x for v in b.ms.values() for x in v], .99):.2f} ms,"
          f" containerd {_p([x for v in c.ms.values() for x in v], .99):.2f} ms; "
          f"mean CPU% berth {100 * b.cpu / duration:.1f}, "
          f"containerd {100 * c.cpu / duration:.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp) / "env") as env:
        logs = env.workdir / "logs"
        fleets = {peer.name: _populate(peer, args.pods, logs) for peer in env.peers()}
        endpoints = {"berth": env.berthd.endpoint, "containerd": env.containerd.endpoint}
        with ThreadPoolExecutor(2) as pool:
            futures = {p.name: pool.submit(drive, p, endpoints[p.name], fleets[p.name],
                                           args.duration) for p in env.peers()}
            loads = {k: f.result() for k, f in futures.items()}
        for peer in env.peers():
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(remove_pod, fleets[peer.name]))
    report(loads, args.pods, args.duration)


if __name__ == "__main__":
    main()
