"""RPC latency under stats work on a full node, berthd vs containerd 1.6 in the same run.

Run: nice -n -15 .venv/bin/python -m bench.stats_pressure [--seconds 30] [--rounds 2]

Issue 19's check that no handler blocks the loop: each runtime holds the 50 `fleet` images
(200,000 files, `bench/images.py`) and 100 running containers (50 pods of two) that have each
written 20 MiB into their writable layer. Then, per runtime in turn (the order alternates each
round), a process of its own calls ImageFsInfo and ListContainerStats back to back without
pause while the bench's main thread calls Version and ListContainers every 10 ms; the latencies
of the main thread are the figures (target: p99 under 5 ms on berth). The other runtime is idle
meanwhile, so the two measurements do not load each other.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench import images as bench_images
from bench.env import environment
from bench.harness import Peer
from bench.pods import Pod, pull, remove_pod, run_pod, start_container, wait_ready
from tests.fixtures.cri_client import CriClient

FILL = ["sh", "-c", "head -c 20971520 /dev/zero > /fill && trap 'exit 0' TERM; "
        "touch /tmp/ready; sleep 3600 & wait"]
PODS = 50
TARGET_MS = 5.0


def _p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def _populate(peer: Peer, refs: list[str], logs: Path, pods: int) -> list[Pod]:
    for ref in refs:
        pull(peer, ref)

    def one(_: int) -> Pod:
        pod = run_pod(peer, logs)
        for _c in range(2):
            wait_ready(pod, start_container(pod, command=FILL), timeout=120)
        return pod

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(pods)))


def _call_each(calls: tuple[tuple[str, Any, Any], ...], got: dict[str, list[float]]) -> None:
    """One call of each (name, stub method, request), its milliseconds appended under name."""
    for name, fn, req in calls:
        t0 = time.perf_counter()
        fn(req, timeout=30)
        got[name].append((time.perf_counter() - t0) * 1000)


def _hammer(endpoint: str, ready: Event, stop: Event, out: Queue) -> None:
    """ImageFsInfo and ListContainerStats back to back until told to stop, in a process of
    its own: sharing the prober's interpreter, its response parsing held the GIL the prober
    needed, which charged the client's own Python to the server's Version latency."""
    client = CriClient(endpoint)
    img, rt, pb = client.image, client.runtime, client.pb
    got: dict[str, list[float]] = {"ImageFsInfo": [], "ListContainerStats": []}
    calls = (("ImageFsInfo", img.ImageFsInfo, pb.ImageFsInfoRequest()),
             ("ListContainerStats", rt.ListContainerStats, pb.ListContainerStatsRequest()))
    while not stop.is_set():
        _call_each(calls, got)
        ready.set()
    client.close()
    out.put(got)


def measure(peer: Peer, seconds: float) -> dict[str, list[float]]:
    """Milliseconds of each call; the stats calls' own latencies are kept for the report."""
    rt, pb = peer.client.runtime, peer.client.pb
    out: dict[str, list[float]] = {"Version": [], "ListContainers": []}
    mp = multiprocessing.get_context("spawn")  # never fork a process that runs grpc threads
    ready, stop, results = mp.Event(), mp.Event(), mp.Queue()
    worker = mp.Process(target=_hammer, args=(peer.client.endpoint, ready, stop, results))
    worker.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"{peer.name}: the stats hammer made no call in 60 s")
        calls = (("Version", rt.Version, pb.VersionRequest()),
                 ("ListContainers", rt.ListContainers, pb.ListContainersRequest()))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            _call_each(calls, out)
            time.sleep(0.01)
    finally:
        stop.set()
        hammered = results.get(timeout=60)
        worker.join()
    return out | hammered


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="per runtime and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=bench_images.FLEET, help="of the fleet")
    ap.add_argument("--pods", type=int, default=PODS, help="two containers each")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp) / "env") as env:
        refs = [bench_images.push("fleet", env.registry.host, f"f{i}")
                for i in range(args.images)]
        logs = env.workdir / "logs"
        fleets: dict[str, list[Pod]] = {}
        try:
            for peer in env.peers():
                t0 = time.monotonic()
                fleets[peer.name] = _populate(peer, refs, logs, args.pods)
                print(f"{peer.name}: {len(refs)} images pulled and {2 * args.pods} containers "
                      f"filled in {time.monotonic() - t0:.0f} s")
            got: dict[str, dict[str, list[float]]] = {p.name: {} for p in env.peers()}
            for rnd in range(args.rounds):
                order = env.peers() if rnd % 2 == 0 else tuple(reversed(env.peers()))
                for peer in order:
                    for k, v in measure(peer, args.seconds).items():
                        got[peer.name].setdefault(k, []).extend(v)
        finally:
            for pods in fleets.values():
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(remove_pod, pods))
    report(got)


def report(got: dict[str, dict[str, list[float]]]) -> None:
    b, c = got["berth"], got["containerd"]
    print("| call | berth p50 ms | berth p99 ms | containerd p50 ms | containerd p99 ms "
          "| ratio p99 | calls (berth) |")
    print("|---|---|---|---|---|---|---|")
    for k in b:
        print(f"| {k} | {_p(b[k], 0.5):.2f} | {_p(b[k], 0.99):.2f} | {_p(c[k], 0.5):.2f} | "
              f"{_p(c[k], 0.99):.2f} | {_p(b[k], 0.99) / _p(c[k], 0.99):.2f} | {len(b[k])} |")
    worst = max(_p(b[k], 0.99) for k in ("Version", "ListContainers"))
    print(f"berth Version/ListContainers p99 {worst:.2f} ms against the {TARGET_MS} ms target: "
          f"{'met' if worst < TARGET_MS else 'not met'}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
