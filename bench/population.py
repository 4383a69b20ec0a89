"""Many pods at once: concurrent bring-up, list latency and memory at 30 and 100 pods."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.env import CRICTL, Env, daemon_pids, pss_kib, rss_breakdown, rss_kib
from bench.harness import Peer, Plan, interleave, timed
from bench.pods import Pod, remove_pod, run_pod, start_container
from bench.stats import Row
from tests.fixtures.cri_client import CriClient


@dataclass
class Fleet:
    """One peer's running pods and the independent clients (channels) that bring them up."""

    peer: Peer
    clients: list[Peer]
    pods: list[Pod] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    def grow(self, count: int, logs: Path) -> float:
        """Bring up `count` pods (with one container each), one per client at once; pods/s."""
        def one(p: Peer) -> Pod:
            pod = run_pod(p, logs)
            self.pods.append(pod)
            start_container(pod)
            return pod

        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(one, self.clients[:count]))
        return count / (time.perf_counter() - t0)

    def shrink(self) -> float:
        """Remove every pod with the same clients; pods/s."""
        def one(i: int) -> None:
            for pod in self.pods[i::len(self.clients)]:
                remove_pod(Pod(self.clients[i], pod.id, pod.config, pod.containers))

        n = len(self.pods)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(one, range(len(self.clients))))
        self.pods.clear()
        return n / (time.perf_counter() - t0) if n else 0.0


def _ramp(fleets: list[Fleet], target: int, clients: int, logs: Path) -> None:
    """Grow both fleets to target pods in alternating rounds; only full rounds count as samples."""
    i = 0
    while len(fleets[0].pods) < target:
        count = min(clients, target - len(fleets[0].pods))
        for f in fleets if i % 2 == 0 else fleets[::-1]:
            rate = f.grow(count, logs)
            if count == clients:
                f.rates.append(rate)
        i += 1


# Issue 17: correctness first; list latency must stay within 1.5x containerd's.
LIST_TARGET = 1.5


def _lists(env: Env, plan: Plan, pods: int) -> list[Row]:
    """Through the in-process grpcio client, and through crictl when it is installed."""
    def lister(peer: Peer, rpc: str) -> Callable[[], float]:
        pb, rt = peer.client.pb, peer.client.runtime
        req = getattr(pb, rpc + "Request")()
        call = getattr(rt, rpc)
        return lambda: timed(lambda: call(req, timeout=30))

    def crictl(peer: Peer, args: list[str]) -> Callable[[], float]:
        cmd = [str(CRICTL), "--runtime-endpoint", peer.client.endpoint, "--timeout", "30s", *args]
        return lambda: timed(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL))

    rows = []
    for rpc in ("ListContainers", "ListPodSandbox"):
        b, c = interleave(lister(env.berth, rpc), lister(env.ctrd, rpc), plan.n, plan.warmup)
        rows.append(Row(f"{rpc}, {pods} pods", "ms", b, c, LIST_TARGET,
                        note="in-process grpcio client"))
    for args in (["ps", "-a"], ["pods"]):
        name = f"crictl {' '.join(args)}, {pods} pods"
        if CRICTL is None:
            rows.append(Row(name, "ms", [], [], LIST_TARGET, note="not measured: no crictl "
                            "(/root/go/bin/crictl, PATH or BERTH_CRICTL)"))
            continue
        b, c = interleave(crictl(env.berth, args), crictl(env.ctrd, args), plan.n, plan.warmup)
        rows.append(Row(name, "ms", b, c, LIST_TARGET, note="whole crictl process, as a user "
                        "runs it"))
    return rows


def _memory(env: Env, plan: Plan, pods: int, base: dict[str, int]) -> Row:
    """(daemon + helpers RSS) / pods; the note adds the marginal cost over an idle daemon."""
    def reader(peer: Peer) -> Callable[[], float]:
        def once() -> float:
            time.sleep(0.05)
            return rss_kib(daemon_pids(peer)) / 1024 / pods
        return once

    b, c = interleave(reader(env.berth), reader(env.ctrd), plan.n, 0)
    marg = {p.name: (rss_kib(daemon_pids(p)) - base[p.name]) / 1024 / pods for p in env.peers()}
    pss = {p.name: pss_kib(daemon_pids(p)) / 1024 / pods for p in env.peers()}
    parts = "; ".join(f"{p.name}: {rss_breakdown(daemon_pids(p))}" for p in env.peers())
    note = (f"readings of one population; marginal per pod over idle: berth "
            f"{marg['berth']:.2f} MiB, containerd {marg['containerd']:.2f} MiB; PSS per pod: "
            f"berth {pss['berth']:.2f} MiB, containerd {pss['containerd']:.2f} MiB; RSS MiB by "
            f"program: {parts}")
    return Row(f"daemon + helper RSS per pod, {pods} pods", "MiB", b, c, 0.25, note=note)


def _scrape(env: Env, plan: Plan, pods: int) -> Row:
    name = f"/metrics scrape, {pods} containers"
    from bench.metrics_bench import scrape_time

    urls = [p.extra.get("metrics_url") for p in env.peers()]
    b: list[float] = []
    c: list[float] = []
    for _ in range(plan.rounds):
        for url, out in zip(urls, (b, c), strict=True):
            if url:
                out.extend(scrape_time(url, max(1, plan.scrapes // plan.rounds)))
    return Row(name, "ms", b, c, None, note="not like for like: berth serves cAdvisor-style "
               "container families, containerd /v1/metrics its own cgroup metrics per task")


def population(env: Env, plan: Plan) -> list[Row]:
    """Ramp to `small` then `large` pods with `clients` concurrent clients, measuring on the way."""
    logs = env.workdir / "logs"
    base = {p.name: rss_kib(daemon_pids(p)) for p in env.peers()}
    opened: list[CriClient] = []
    fleets = []
    for peer in env.peers():
        clis = [CriClient(peer.client.endpoint, peer.name) for _ in range(plan.clients)]
        opened += clis
        fleets.append(Fleet(peer, [Peer(peer.name, c, peer.extra) for c in clis]))
    rows: list[Row] = []
    try:
        _ramp(fleets, plan.small, plan.clients, logs)
        rows += _lists(env, plan, plan.small)
        rows.append(_memory(env, plan, plan.small, base))
        _ramp(fleets, plan.large, plan.clients, logs)
        rows += _lists(env, plan, plan.large)
        rows.append(_scrape(env, plan, plan.large))
        more = max(0, plan.rate_rounds - len(fleets[0].rates))  # top up to enough samples
        _ramp(fleets, len(fleets[0].pods) + more * plan.clients, plan.clients, logs)
        b, c, total = fleets[0].rates, fleets[1].rates, len(fleets[0].pods)
        rows.insert(0, Row(f"pods up with {plan.clients} concurrent clients", "pods/s", b, c,
                           None, note=f"{len(b)} rounds of {plan.clients} pods, growing to "
                           f"{total}", higher_is_better=True))
        down = [f.shrink() for f in fleets]
        rows.append(Row(f"{total} pods removed by {plan.clients} clients", "pods/s",
                        [down[0]], [down[1]], None, note="one sample", higher_is_better=True))
    finally:
        for f in fleets:
            f.shrink()
        for cli in opened:
            cli.close()
    return rows
