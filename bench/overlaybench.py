"""Pod-to-pod throughput over the vxlan overlay against two pods on one node bridge.

Two nodes (netns as tests/network/test_vxlan.py builds them, joined by one veth pair of MTU 1500
as the underlay: a wire, not a software switch whose cost a real underlay would not put on the
nodes' CPUs), three pods: A and B on node 1, C on node 2. Each sample is one bounded HTTP
transfer of a 200 MiB file: `busybox httpd` serves it in the server pod, curl in A fetches it
to /dev/null.
A->C crosses the overlay; A->B stays on node 1's bridge. Rounds alternate which goes first.

Wall-clock MiB/s on 2 shared cores moves by +-0.1 in ratio between runs, so the row's note also
gives what each path costs: CPU time per MiB moved, from a private cgroup holding curl (its
start included, the same on both paths) and both httpds, plus the ksoftirqd threads' time over
the transfer. Softirq work done in the context of curl or httpd is charged to them on a kernel
without CONFIG_IRQ_TIME_ACCOUNTING (as here); other processes' softirq work in ksoftirqd or in
our context is the noise left.
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
from bench.stats import Row, percentile
from cni_plugins.install import install
from runtime import cgroups
from runtime.cgroups.model import Resources
from tests.fixtures import hostclean
from tests.fixtures._proc import wait_until
from tests.network.overlay import Cluster, Pod, sh

SIZE_MIB = 200
PORT = 8080


class CpuMeter:
    """CPU time of the processes started through `argv` (a private cgroup) and of ksoftirqd."""

    def __init__(self) -> None:
        self.driver = cgroups.driver()
        self.path = f"berth-bench-overlay-{os.urandom(4).hex()}"
        self.driver.create(self.path, Resources())
        self.ksoftirqd = [pid for pid in os.listdir("/proc")
                          if pid.isdigit() and _comm(pid).startswith("ksoftirqd/")]

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` run by a shell that first moves itself into the cgroup."""
        joins = " && ".join(f"echo 0 > {f}" for f in self.driver.join_files(self.path))
        return ["sh", "-c", f'{joins} && exec "$@"', "sh", *cmd]

    def ns(self) -> int:
        total = self.driver.stats(self.path).cpu_usage_ns
        for pid in self.ksoftirqd:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total

    def close(self) -> None:
        self.driver.remove(self.path)


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _sampler(
    client: Pod, server: Pod, meter: CpuMeter, cpu: list[float]
) -> Callable[[], float]:
    """MiB/s of one transfer, its CPU µs per MiB appended to `cpu`; a short or failed transfer
    fails the row rather than flatter it."""
    url = f"http://{server.ip}:{PORT}/blob"

    def once() -> float:
        t0, ns0 = time.monotonic(), meter.ns()
        proc = subprocess.run(meter.argv("nsenter", f"--net={client.netns}", "curl", "-sS", "-o",
                                         "/dev/null", "-w", "%{size_download}", url),
                              capture_output=True, text=True, timeout=300)
        took, ns = time.monotonic() - t0, meter.ns() - ns0
        if proc.returncode != 0 or proc.stdout.strip() != str(SIZE_MIB << 20):
            raise RuntimeError(f"transfer {client.ip}->{server.ip}: {proc.stdout} {proc.stderr}")
        cpu.append(ns / 1e3 / SIZE_MIB)
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
        meter = CpuMeter()
        try:
            cluster = Cluster(tmp, 2, bin_dir, bin_dir, wire=True)
            servers: list[subprocess.Popen[bytes]] = []
            cpu_over: list[float] = []
            cpu_bridge: list[float] = []
            try:
                a, b = cluster.add_pod(cluster.nodes[0]), cluster.add_pod(cluster.nodes[0])
                c = cluster.add_pod(cluster.nodes[1])
                for pod in (b, c):
                    servers.append(subprocess.Popen(meter.argv(
                        "nsenter", f"--net={pod.netns}", "busybox", "httpd", "-f", "-p", str(PORT),
                        "-h", www)))
                    wait_until(_listening(pod), 20, f"httpd in {pod.ip}")
                over, bridge = interleave(_sampler(a, c, meter, cpu_over),
                                          _sampler(a, b, meter, cpu_bridge), rounds, plan.warmup)
                for pod in (a, b, c):
                    cluster.del_pod(pod)
            finally:
                for proc in servers:
                    proc.kill()
                    proc.wait()
                cluster.close()
        finally:
            meter.close()
        left = hostclean.mounts_under(Path(tmp))
    if left:
        raise AssertionError(f"overlay bench left mounts: {left}")
    return [Row(f"pod-to-pod throughput, vxlan overlay vs one bridge ({SIZE_MIB} MiB HTTP)",
                "MiB/s", over, bridge, 0.8, higher_is_better=True,
                peer_name="two pods on one bridge",
                note=f"{rounds} transfers each, busybox httpd -> curl, underlay one veth pair "
                     "MTU 1500, overlay MTU 1450 on both sides; ours = pods on two nodes; "
                     f"{_cpu_note(cpu_over[-rounds:], cpu_bridge[-rounds:])}")]


def _cpu_note(over: list[float], bridge: list[float]) -> str:
    """The cost side: CPU per MiB moved (warm-up rounds left out), overlay over bridge."""
    p50o, p50b = percentile(over, 50), percentile(bridge, 50)
    return (f"CPU per MiB (curl + httpd + ksoftirqd) p50 (p90) {p50o:.0f} "
            f"({percentile(over, 90):.0f}) µs overlay vs {p50b:.0f} ({percentile(bridge, 90):.0f}) "
            f"µs bridge = {p50o / p50b:.3f}× the cost")
