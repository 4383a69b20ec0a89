"""Memory per pod when every pod has a pod-wide pid namespace (kubelet's shareProcessNamespace).

Such a pod needs a pid 1 of its own: Berth's `catatonit -P` under a detached `unshare`,
containerd's pause container under its shim. Both pid 1s are counted as the runtime's helpers
(`pod_init_pids`), beside what `daemon_pids` already counts, so the row compares like for like.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.env import Env, daemon_pids, pss_kib
from bench.harness import Peer, Plan, interleave
from bench.pods import Pod, remove_pod, run_pod, start_container
from bench.stats import Row

POD_INITS = {"catatonit", "pause"}


def pod_init_pids(parents: list[int]) -> list[int]:
    """Children of the peer's helpers that are a pod's pid 1 (never a container's process)."""
    found = []
    for pid in parents:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                comm = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            if comm in POD_INITS:
                found.append(child)
    return found


def helper_pss_kib(peer: Peer) -> int:
    """PSS of the daemon, its per-pod/node helpers and the pods' pid 1s."""
    pids = daemon_pids(peer)
    return pss_kib(pids + pod_init_pids(pids))


def shared_pid_memory(env: Env, plan: Plan) -> list[Row]:
    """`small` pods with a shared pid namespace and one sleeper each, on both peers at once."""
    logs = env.workdir / "logs-sharedpid"
    base = {p.name: helper_pss_kib(p) for p in env.peers()}
    fleets: dict[str, list[Pod]] = {p.name: [] for p in env.peers()}
    try:
        for _ in range(plan.small):
            for peer in env.peers():
                pod = run_pod(peer, logs, shared_pid=True)
                fleets[peer.name].append(pod)
                start_container(pod, shared_pid=True)

        def reader(peer: Peer) -> float:
            time.sleep(0.05)
            return helper_pss_kib(peer) / 1024 / plan.small

        b, c = interleave(lambda: reader(env.berth), lambda: reader(env.ctrd), plan.n, 0)
        inits = {p.name: len(pod_init_pids(daemon_pids(p))) for p in env.peers()}
        marg = {p.name: (helper_pss_kib(p) - base[p.name]) / 1024 / plan.small
                for p in env.peers()}
    finally:
        for pods in fleets.values():
            for pod in pods:
                remove_pod(pod)
    note = (f"pid 1s counted: berth {inits['berth']} catatonit, containerd {inits['containerd']} "
            f"pause; marginal PSS per pod over idle: berth {marg['berth']:.2f} MiB, containerd "
            f"{marg['containerd']:.2f} MiB")
    return [Row(f"daemon + helper PSS per pod, {plan.small} pods sharing a pid namespace", "MiB",
                b, c, 1.0, note=note)]
