"""Cold PullImage of real image shapes, berthd vs containerd 1.6 in the same run, interleaved.

Run: nice -n -15 .venv/bin/python -m bench.shapes_bench [N] [SHAPES] [GAP]
  N: cold samples per runtime, shape and client (default 5); SHAPES: comma-separated subset of
  big (the 50 MB / 10-layer fixture image), python (~30,000 files of 1-50 KB over 11 layers),
  model (two weight files of 240 and 320 MiB of incompressible data plus a small runtime);
  GAP: seconds of idle before each timed pull (default 0). Back to back, each pull finds what
  the runtime's last pull left warm; a GAP over 10 s is a node that pulls now and then (Berth's
  unpack workers are gone by then, `runtime/images/unpack_procs.py`).

Every sample is RemoveImage, a check that no layer blob or snapshot of the image is left in
either store, a sync(2) so that no write of an earlier sample (either runtime's) is still
going to disk, then a timed PullImage. Two clients: the in-process CRI client (gRPC), and crictl
(`crictl pull`, timed from outside the process) when CRICTL exists.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import images as bench_images
from bench.env import CRICTL
from bench.pull_bench import _blobs, _cpu, _layer_hexes, _p, cold_pull, remove_image
from tests.fixtures import hostclean

SHAPES = ("big", "python", "model")


@dataclass
class Store:
    """Where a runtime keeps what a cold pull must not find."""

    endpoint: str
    blobs: Path
    snapshots: Path
    pid: int


@dataclass
class Result:
    seconds: dict[str, list[float]] = field(default_factory=dict)  # "<runtime> <client>" -> s
    cpu: dict[str, list[float]] = field(default_factory=dict)


def _crictl_pull(endpoint: str, ref: str) -> float:
    """crictl rmi (ignored when absent), then a timed crictl pull."""
    base = [str(CRICTL), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
            "--timeout", "600s"]
    subprocess.run([*base, "rmi", ref], capture_output=True, timeout=600)
    os.sync()
    t0 = time.perf_counter()
    subprocess.run([*base, "pull", ref], check=True, capture_output=True, timeout=900)
    took = time.perf_counter() - t0
    subprocess.run([*base, "rmi", ref], capture_output=True, timeout=600)
    return took


def _tree_cpu(st: Store) -> float:
    """CPU seconds of the daemon, of its children it reaped, and of its live helpers that name
    its snapshot dir (Berth's unpack workers; containerd unpacks in its own process)."""
    fields = Path(f"/proc/{st.pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for pid in hostclean.pids_with_arg(str(st.snapshots)):
        with contextlib.suppress(OSError):  # one that exited meanwhile is in cutime now
            total += _cpu(pid) if pid != st.pid else 0.0
    return total


def _check_cold(name: str, st: Store, layers: set[str]) -> None:
    left = _blobs(st.blobs) & layers
    snapped = {x for x in _blobs(st.snapshots) if not x.startswith(".tmp-")}
    if left or snapped:
        raise AssertionError(f"{name}: {len(left)} blobs, {len(snapped)} snapshots left after "
                             "RemoveImage: the next pull would not be cold")


def run(n: int, shapes: list[str], gap: float = 0.0) -> dict[str, Result]:
    from tests.fixtures.berthd import run_berthd
    from tests.fixtures.containerd import run_containerd
    from tests.fixtures.images import push_images
    from tests.fixtures.registry import run_registry

    clients = ["grpc", "crictl"] if CRICTL else ["grpc"]
    out: dict[str, Result] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        with run_registry(t / "reg") as reg:
            pushed = push_images(reg.host, ["big", "pause"])
            refs = {s: pushed["big"].ref if s == "big" else bench_images.push(s, reg.host)
                    for s in shapes}
            layouts = {s: pushed["big"].layout if s == "big" else bench_images.layout(s)
                       for s in shapes}
            with run_berthd(t / "berthd", log_level="info") as bd, \
                    run_containerd(t / "ctrd", [reg.host], pushed["pause"].ref) as cd:
                assert bd.proc is not None and cd.proc is not None
                bimg = Path(bd.state_dir) / "images"
                stores = {
                    "berthd": Store(bd.endpoint, bimg / "blobs" / "sha256",
                                    bimg / "snapshots", bd.proc.pid),
                    "containerd": Store(cd.endpoint, cd.root / "io.containerd.content.v1.content"
                                        / "blobs" / "sha256", cd.root
                                        / "io.containerd.snapshotter.v1.overlayfs"
                                        / "snapshots", cd.proc.pid)}
                for shape in shapes:
                    res = out[shape] = Result()
                    layers = _layer_hexes(layouts[shape])
                    for i in range(n):
                        for client in clients:
                            order = list(stores) if i % 2 == 0 else list(reversed(stores))
                            for name in order:
                                st = stores[name]
                                if client == "grpc":
                                    remove_image(st.endpoint, refs[shape])
                                    os.sync()
                                time.sleep(gap)
                                c0 = _tree_cpu(st)
                                took = (cold_pull(st.endpoint, refs[shape], 1)[0]
                                        if client == "grpc"
                                        else _crictl_pull(st.endpoint, refs[shape]))
                                key = f"{name} {client}"
                                res.seconds.setdefault(key, []).append(took)
                                res.cpu.setdefault(key, []).append(_tree_cpu(st) - c0)
                                _check_cold(name, st, layers)
    return out


def report(out: dict[str, Result], gap: float) -> None:
    load = os.getloadavg()
    print("| image | client | berth p50 s | berth p90 s | containerd p50 s | containerd p90 s "
          "| ratio p50 | berth CPU p50 s (daemon + unpack workers) | containerd CPU p50 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, res in out.items():
        for client in sorted({k.split()[1] for k in res.seconds}):
            b, c = res.seconds[f"berthd {client}"], res.seconds[f"containerd {client}"]
            print(f"| {shape} | {client} | {statistics.median(b):.3f} | {_p(b, 0.9):.3f} | "
                  f"{statistics.median(c):.3f} | {_p(c, 0.9):.3f} | "
                  f"{statistics.median(b) / statistics.median(c):.3f} | "
                  f"{statistics.median(res.cpu[f'berthd {client}']):.2f} | "
                  f"{statistics.median(res.cpu[f'containerd {client}']):.2f} |")
    if not CRICTL:
        print("crictl: none found (BERTH_CRICTL, /root/go/bin/crictl, PATH), so only the "
              "in-process gRPC client was timed")
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cpus; "
          f"{gap:g} s idle before each timed pull")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else list(SHAPES)
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    if count < 1 or set(chosen) - set(SHAPES) or idle < 0:
        sys.exit(f"usage: python -m bench.shapes_bench [N>=1] [{','.join(SHAPES)}] [GAP>=0]")
    report(run(count, chosen, idle), idle)
