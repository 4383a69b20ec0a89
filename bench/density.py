"""Density: 250 pods on one node. Pod start on a full node against an empty one, memory per
pod, and a teardown that leaves nothing (the environment's fixtures check every kernel object).

Run: nice -n -15 .venv/bin/python -m bench.density [--pods 250] [--samples 10] [--containerd]

A pod start is RunPodSandbox + CreateContainer + StartContainer of one busybox sleeper, as the
other pod benchmarks time it. Samples on the empty node are started and removed one at a time;
then the node is filled to pods - samples, and the last `samples` pods are the full-node
samples (kept running). Memory per pod is the daemon + helper RSS over the idle figure, and the
total divided by the pod count, at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.env import daemon_pids, environment, rss_kib
from bench.harness import Peer
from bench.pods import Pod, remove_pod, run_pod, start_container


def _start(peer: Peer, logs: Path) -> tuple[Pod, float]:
    t0 = time.perf_counter()
    pod = run_pod(peer, logs)
    start_container(pod)
    return pod, (time.perf_counter() - t0) * 1000


def density(peer: Peer, logs: Path, pods: int, samples: int) -> dict[str, float]:
    idle = rss_kib(daemon_pids(peer))
    empty = []
    for _ in range(samples):
        pod, ms = _start(peer, logs)
        empty.append(ms)
        remove_pod(pod)
    with ThreadPoolExecutor(4) as pool:
        running = list(pool.map(lambda _: run_pod(peer, logs), range(pods - samples)))
        list(pool.map(start_container, running))
    full = []
    for _ in range(samples):
        pod, ms = _start(peer, logs)
        full.append(ms)
        running.append(pod)
    rss = rss_kib(daemon_pids(peer))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(remove_pod, running))
    teardown = time.perf_counter() - t0
    return {"pods": len(running), "start_empty_p50_ms": statistics.median(empty),
            "start_full_p50_ms": statistics.median(full),
            "ratio_full_empty": statistics.median(full) / statistics.median(empty),
            "rss_per_pod_mib": rss / 1024 / len(running),
            "marginal_rss_per_pod_mib": (rss - idle) / 1024 / len(running),
            "teardown_s": teardown}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=250)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--containerd", action="store_true", help="also fill containerd's node")
    args = ap.parse_args(argv)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp) / "env") as env:
        logs = env.workdir / "logs"
        for peer in env.peers():
            if peer.name == "berth" or args.containerd:
                out[peer.name] = density(peer, logs, args.pods, args.samples)
    for name, figures in out.items():  # printed after the leak-checking teardown passed
        print(name, " ".join(f"{k}={v:.3g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
