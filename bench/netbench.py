"""Per-pod network setup: our CNI plugins vs Debian's reference plugins, driven per the spec."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.env import Env
from bench.harness import Plan, interleave
from bench.stats import Row, percentile
from cni_plugins import firewall
from cni_plugins.install import install
from tests.fixtures import hostclean
from tests.network.bench_add import Chain
from tests.network.helpers import REFERENCE_BIN, rand_name, restore_forwarding, snapshot_forwarding

_STEP = {"bridge": "bridge+host-local"}


def _sampler(chain: Chain, tmp: str, port: int) -> Callable[[], float]:
    """One pod: a fresh netns, ADD loopback+bridge(host-local)+portmap timed, DEL untimed."""
    def once() -> float:
        ns = os.path.join(tmp, rand_name("bn"))
        open(ns, "w").close()
        subprocess.run(["unshare", f"--net={ns}", "true"], check=True)
        cid = os.urandom(32).hex()
        try:
            took, res = chain.add(cid, ns, port)
            chain.delete(cid, ns, res, port)
        finally:
            subprocess.run(["umount", ns], check=True)
            os.unlink(ns)
        return took * 1000
    return once


def _leaks(chains: list[Chain], tmp: str) -> list[str]:
    """What the fixtures check too: links, firewall rules naming our networks, netns mounts."""
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    rules += "\n".join(hostclean.iptables_lines("nat") + hostclean.iptables_lines("filter"))
    left = [f"bridge {c.bridge}" for c in chains if hostclean.link_exists(c.bridge)]
    left += [f"firewall rules of {c.name}" for c in chains if c.name in rules]
    left += [f"mounts {m}" for m in hostclean.mounts_under(Path(tmp))]
    return left


def cni_add(env: Env, plan: Plan) -> list[Row]:
    """ADD latency per pod on bridges and subnets of our own; everything is DEL'd and pruned."""
    nat_before = hostclean.chains("nat")
    fwd = snapshot_forwarding()
    port = random.randrange(30000, 32000)
    with tempfile.TemporaryDirectory(prefix="berth-bench-cni-") as tmp:
        ours_bin = os.path.join(tmp, "bin")
        install(ours_bin, socket_path=env.berth.extra["plugin_socket"])
        ours, ref = Chain(ours_bin, tmp), Chain(REFERENCE_BIN, tmp)
        try:
            b, c = interleave(_sampler(ours, tmp, port), _sampler(ref, tmp, port + 1),
                              plan.cni_pods, plan.warmup)
        finally:
            ours.close()
            ref.close()
            restore_forwarding(fwd)
            firewall.prune()
            hostclean.drop_portmap_chains(nat_before)
    leaks = _leaks([ours, ref], tmp)
    if leaks:
        raise AssertionError("CNI bench leaked: " + "; ".join(leaks))
    steps = "; ".join(f"{who} " + ", ".join(
        f"{_STEP.get(k, k)} {percentile(v[plan.warmup:], 50) * 1000:.0f}"
        for k, v in ch.steps.items() if k != "cpu")  # children's CPU misses the warm server
        for who, ch in (("ours", ours), ("reference", ref)))
    return [Row("CNI ADD per pod: loopback, bridge+host-local, portmap", "ms", b, c, 0.5,
                peer_name="reference plugins", note=f"{plan.cni_pods} pods each, fresh netns, "
                f"own bridge and subnet, DEL after each; ours through the warm plugin server; "
                f"p50 ms per plugin: {steps}")]
