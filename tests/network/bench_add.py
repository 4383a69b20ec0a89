"""Per-pod ADD time (loopback + bridge/host-local + portmap), ours vs the reference plugins.

Run by hand: nice -n -15 .venv/bin/python -m tests.network.bench_add --pods 50 [--direct]
"ours" is the C launchers + a private warm plugin server (started and stopped here); --direct
adds our launchers with no server (each call execs Python). Interleaves the implementations
pod by pod so machine noise hits all alike; also prints the CPU time (user+sys) of the processes
the runtime exec'd per pod, which other load skews less. For "ours" that leaves out the server's
workers, so compare its CPU figure with care.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time

from cni_plugins import firewall
from cni_plugins.install import install
from tests.network.helpers import (
    REFERENCE_BIN,
    bridge_conf,
    cni,
    free_subnet,
    ok,
    rand_name,
    restore_forwarding,
    snapshot_forwarding,
)
from tests.network.plugin_server import start_server, stop_server


class Chain:
    """One implementation's network: its own bridge, subnet and lease dir."""

    def __init__(self, bin_dir: str, tmp: str) -> None:
        self.bin = bin_dir
        self.bridge = rand_name("bt")
        self.name = "bench" + self.bridge
        self.bridge_conf = bridge_conf(self.name, self.bridge, free_subnet(), tmp + "/" + self.name)
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        self.steps: dict[str, list[float]] = {}

    def add(self, cid: str, netns: str, host_port: int) -> tuple[float, dict]:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        lo = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
        ok(cni(self.bin, "loopback", "ADD", lo, cid, netns, "lo"))
        t1 = time.perf_counter()
        res = ok(cni(self.bin, "bridge", "ADD", self.bridge_conf, cid, netns))
        t2 = time.perf_counter()
        res = ok(cni(self.bin, "portmap", "ADD", self.portmap_conf(res, host_port), cid, netns))
        t3 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
        self.steps.setdefault("cpu", []).append(cpu)
        for step, took in (("loopback", t1 - t0), ("bridge", t2 - t1), ("portmap", t3 - t2)):
            self.steps.setdefault(step, []).append(took)
        return t3 - t0, res

    def delete(self, cid: str, netns: str, prev: dict, host_port: int) -> None:
        ok(cni(self.bin, "portmap", "DEL", self.portmap_conf(prev, host_port), cid, netns))
        ok(cni(self.bin, "bridge", "DEL", self.bridge_conf, cid, netns))

    def portmap_conf(self, prev: dict, host_port: int) -> dict:
        conf = {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "portmap",
            "runtimeConfig": {
                "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
            },
        }
        if prev:
            conf["prevResult"] = prev
        return conf

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], check=False)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--direct", action="store_true", help="also our plugins without server")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "plugins.sock")
        ours_bin, direct_bin = os.path.join(tmp, "bin"), os.path.join(tmp, "direct")
        install(ours_bin, socket_path=sock)
        chains = {"ours": Chain(ours_bin, tmp), "reference": Chain(REFERENCE_BIN, tmp)}
        if opts.direct:
            install(direct_bin, socket_path=os.path.join(tmp, "absent.sock"))
            chains["direct"] = Chain(direct_bin, tmp)
        server = start_server(sock)
        times: dict[str, list[float]] = {k: [] for k in chains}
        saved_fwd = snapshot_forwarding()
        try:
            for i in range(opts.pods):
                for kind, chain in chains.items():
                    ns = os.path.join(tmp, rand_name("bn"))
                    open(ns, "w").close()
                    subprocess.run(["unshare", f"--net={ns}", "true"], check=True)
                    cid = os.urandom(32).hex()
                    try:
                        took, res = chain.add(cid, ns, 21000 + i)
                        times[kind].append(took)
                        chain.delete(cid, ns, res, 21000 + i)
                    finally:
                        subprocess.run(["umount", ns], check=True)
        finally:
            stop_server(server, sock)
            for chain in chains.values():
                chain.close()
            restore_forwarding(saved_fwd)
            firewall.prune()
    for kind, values in times.items():
        print(
            f"{kind:10s} p50 {pct(values, 0.5):6.1f} ms  p90 {pct(values, 0.9):6.1f} ms  "
            f"mean {statistics.mean(values) * 1000:6.1f} ms  (n={len(values)})"
        )
        steps = chains[kind].steps.items()
        print("           " + "  ".join(f"{k} p50 {pct(v, 0.5):.1f}" for k, v in steps))
    for p in (0.5, 0.9):
        ratio = pct(times["ours"], p) / pct(times["reference"], p)
        print(f"ratio ours/reference at p{int(p * 100)}: {ratio:.2f}")
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
