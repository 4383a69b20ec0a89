"""Scrape cost of /metrics: `scrape_time` for the population bench, and a standalone run.

    .venv/bin/python -m bench.metrics_bench [--containers 100] [--scrapes 30]

The standalone run starts a registry and berthd with metrics on, brings up one pod per
container (busybox sleeping), then times scrapes and reports p50/p90/max in ms, and berthd's
CPU time per scrape (the figure to trust when the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.harness import Peer
from bench.pods import pull, run_pod, start_container
from bench.stats import percentile
from tests.fixtures._proc import free_port
from tests.fixtures.berthd import run_berthd
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import push_images
from tests.fixtures.registry import run_registry


def scrape_time(url: str, n: int) -> list[float]:
    """Wall time of n full scrapes of `url` (the /metrics URL) in ms, body read included."""
    out = []
    with httpx.Client(timeout=30) as http:
        http.get(url).raise_for_status()  # warm-up: first CPU baselines, connection set-up
        for _ in range(n):
            t0 = time.perf_counter()
            http.get(url).raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def cpu_per_scrape(pid: int, url: str, n: int) -> float:
    """CPU ms the daemon spends per scrape: unlike wall time, barely moved by a busy machine."""
    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = cpu_ticks()
    scrape_time(url, n)
    return (cpu_ticks() - before) * 1000 / os.sysconf("SC_CLK_TCK") / (n + 1)


def _run(containers: int, scrapes: int, workdir: Path) -> tuple[list[float], float]:
    with ExitStack() as stack:
        reg = stack.enter_context(run_registry(workdir / "registry"))
        images = push_images(reg.host, ("busybox",))
        address = f"127.0.0.1:{free_port()}"
        d = stack.enter_context(run_berthd(workdir / "berthd", log_level="warning",
                                           registry={"insecure": [reg.host]},
                                           metrics={"address": address}))
        clients = [stack.enter_context(CriClient(d.endpoint, "berth")) for _ in range(4)]
        peers = [Peer("berth", c, {"berthd": d, "images": images}) for c in clients]
        pull(peers[0], images["busybox"].ref)
        logs = workdir / "logs"

        def up(i: int) -> None:
            pod = run_pod(peers[i % len(peers)], logs)
            start_container(pod)

        with ThreadPoolExecutor(len(peers)) as pool:
            list(pool.map(up, range(containers)))
        try:
            url = f"http://{address}/metrics"
            assert d.proc is not None
            return scrape_time(url, scrapes), cpu_per_scrape(d.proc.pid, url, scrapes)
        finally:
            with CriClient(d.endpoint) as cli:
                pods = cli.runtime.ListPodSandbox(cli.pb.ListPodSandboxRequest(), timeout=60)
                for p in pods.items:
                    remove_pod_by_id(cli, p.id)


def remove_pod_by_id(cli: CriClient, pod_id: str) -> None:
    pb = cli.pb
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-metrics-bench-") as tmp:
        ms, cpu = _run(args.containers, args.scrapes, Path(tmp))
    print(f"/metrics scrape, {args.containers} running containers, {len(ms)} scrapes: "
          f"p50 {percentile(ms, 50):.1f} ms, p90 {percentile(ms, 90):.1f} ms, "
          f"max {max(ms):.1f} ms; berthd CPU {cpu:.1f} ms per scrape; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
