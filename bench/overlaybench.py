"""Pod-to-pod throughput over the vxlan overlay against two pods on one node bridge.

Two nodes (netns as tests/network/test_vxlan.py builds them, joined by one veth pair of MTU 1500
as the underlay: a wire, not a software switch whose cost a real underlay would not put on the
nodes' CPUs), three pods: A and B on node 1, C on node 2. Each sample is one bounded HTTP
transfer of a 200 MiB file: `busybox httpd` serves it in the server pod, curl in A fetches it
to /dev/null.
A->C crosses the overlay; A->B stays on node 1's bridge. Rounds alternate which goes first.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.env import Env
from bench.harness import Plan, interleave
from bench.stats import Row
from cni_plugins.install import install
from tests.fixtures import hostclean
from tests.fixtures._proc import wait_until
from tests.network.overlay import Cluster, Pod, sh

SIZE_MIB = 200
PORT = 8080


def _sampler(client: Pod, server: Pod) -> Callable[[], float]:
    """MiB/s of one transfer; a short or failed transfer fails the row rather than flatter it."""
    url = f"http://{server.ip}:{PORT}/blob"

    def once() -> float:
        t0 = time.monotonic()
        proc = subprocess.run(["nsenter", f"--net={client.netns}", "curl", "-sS", "-o",
                               "/dev/null", "-w", "%{size_download}", url],
                              capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        if proc.returncode != 0 or proc.stdout.strip() != str(SIZE_MIB << 20):
            raise RuntimeError(f"transfer {client.ip}->{server.ip}: {proc.stdout} {proc.stderr}")
        return SIZE_MIB / took
    return once


def _listening(pod: Pod) -> Callable[[], bool]:
    return lambda: f":{PORT} " in sh(pod.netns, "ss", "-Hltn")


def overlay(env: Env, plan: Plan) -> list[Row]:
    """Median MiB/s A->C (overlay) over A->B (one bridge); target: at least 0.8."""
    rounds = plan.n  # a ratio from 10 transfers moved by +-0.1 between runs at load 10
    with tempfile.TemporaryDirectory(prefix="berth-bench-vxlan-") as tmp:
        bin_dir = os.path.join(tmp, "bin")
        install(bin_dir, socket_path=env.berth.extra["plugin_socket"])
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        blob = os.path.join(www, "blob")
        open(blob, "w").close()
        os.truncate(blob, SIZE_MIB << 20)  # sparse: reading it costs no disk
        cluster = Cluster(tmp, 2, bin_dir, bin_dir, wire=True)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            a, b = cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[0])
            c = cluster.add_pod(cluster.nodes[1])
            for pod in (b, c):
                servers.append(subprocess.Popen(
                    ["nsenter", f"--net={pod.netns}", "busybox", "httpd", "-f", "-p", str(PORT),
                     "-h", www]))
                wait_until(_listening(pod), 20, f"httpd in {pod.ip}")
            over, bridge = interleave(_sampler(a, c), _sampler(a, b), rounds, plan.warmup)
            for pod in (a, b, c):
                cluster.del_pod(pod)
        finally:
            for proc in servers:
                proc.kill()
                proc.wait()
            cluster.close()
        left = hostclean.mounts_under(Path(tmp))
    if left:
        raise AssertionError(f"overlay bench left mounts: {left}")
    return [Row(f"pod-to-pod throughput, vxlan overlay vs one bridge ({SIZE_MIB} MiB HTTP)",
                "MiB/s", over, bridge, 0.8, higher_is_better=True,
                peer_name="two pods on one bridge",
                note=f"{rounds} transfers each, busybox httpd -> curl, underlay one veth pair "
                     "MTU 1500, overlay MTU 1450 on both sides; ours = pods on two nodes")]
