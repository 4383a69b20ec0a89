"""Cold CRI PullImage of the 50 MB / 10-layer `big` image, berthd vs containerd 1.6, interleaved.

Run: nice -n -15 .venv/bin/python -m bench.pull_bench [N] [DOWNLOADS]
(N cold samples per runtime, >= 3; DOWNLOADS sets berthd's registry.max_concurrent_downloads,
default: its config default; containerd keeps its own default of 3)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from tests.fixtures.cri_client import CriClient


def _remove(client: CriClient, ref: str) -> None:
    """RemoveImage (containerd's CRI also garbage-collects the content synchronously)."""
    pb = client.pb
    try:
        client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise


def remove_image(endpoint: str, ref: str) -> None:
    """RemoveImage of ref (absent is fine) over a connection of its own."""
    with CriClient(endpoint, "bench") as client:
        _remove(client, ref)


def cold_pull(endpoint: str, ref: str, n: int) -> list[float]:
    """Seconds of n PullImage calls of ref, each after a RemoveImage of it.

    The caller makes sure nothing else keeps the image's layers (another image sharing its base,
    a container): otherwise the pull is not cold.
    """
    out: list[float] = []
    with CriClient(endpoint, "bench") as client:
        pb = client.pb
        req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
        for _ in range(n):
            _remove(client, ref)
            t0 = time.perf_counter()
            client.image.PullImage(req, timeout=300)
            out.append(time.perf_counter() - t0)
        _remove(client, ref)
    return out


def _blobs(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _cpu(pid: int) -> float:
    """User+system CPU seconds of a process so far (threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _layer_hexes(layout: Path) -> set[str]:
    """Hex digests of the layer blobs of the layout's one manifest."""
    blobs = layout / "blobs" / "sha256"
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((blobs / top[7:]).read_text())
    return {ly["digest"][7:] for ly in manifest["layers"]}


def _p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(n: int, downloads: int | None = None) -> None:
    """Both runtimes on one loopback registry; samples alternate (who goes first too)."""
    from tests.fixtures.berthd import run_berthd
    from tests.fixtures.containerd import run_containerd
    from tests.fixtures.images import push_images
    from tests.fixtures.registry import run_registry

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        with run_registry(t / "reg") as reg:
            big = push_images(reg.host, ["big"])["big"]
            layers = _layer_hexes(big.layout)
            extra = {"registry": {"max_concurrent_downloads": downloads}} if downloads else {}
            with run_berthd(t / "berthd", **extra) as bd, \
                    run_containerd(t / "ctrd", [reg.host], big.ref) as cd:
                assert bd.proc is not None and cd.proc is not None
                bimg = Path(bd.state_dir) / "images"
                stores = {
                    "berthd": (bd.endpoint, bimg / "blobs" / "sha256", bimg / "snapshots",
                               bd.proc.pid),
                    "containerd": (cd.endpoint, cd.root / "io.containerd.content.v1.content"
                                   / "blobs" / "sha256", cd.root
                                   / "io.containerd.snapshotter.v1.overlayfs" / "snapshots",
                                   cd.proc.pid),
                }
                res: dict[str, list[float]] = {k: [] for k in stores}
                cpu: dict[str, list[float]] = {k: [] for k in stores}
                for i in range(n):
                    order = list(stores) if i % 2 == 0 else list(reversed(stores))
                    for name in order:
                        endpoint, blobs, snaps, pid = stores[name]
                        c0 = _cpu(pid)
                        res[name] += cold_pull(endpoint, big.ref, 1)
                        cpu[name].append(_cpu(pid) - c0)
                        left = _blobs(blobs) & layers
                        snapped = {x for x in _blobs(snaps) if not x.startswith(".tmp-")}
                        if left or snapped:
                            raise AssertionError(f"{name}: {len(left)} blobs, {len(snapped)} "
                                                 "snapshots left after RemoveImage: the next "
                                                 "pull would not be cold")
                load = os.getloadavg()
    b, c = res["berthd"], res["containerd"]
    for name, xs in res.items():
        print(f"{name:10} cold PullImage {big.ref}: runs {[round(x, 3) for x in xs]} s, "
              f"p50 {statistics.median(xs):.3f} s, p90 {_p(xs, 0.9):.3f} s, "
              f"daemon CPU (remove+pull+remove) p50 {statistics.median(cpu[name]):.2f} s")
    print(f"berthd max_concurrent_downloads: {downloads or 'default'}")
    print(f"ratio berthd/containerd p50 {statistics.median(b) / statistics.median(c):.2f}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5,
         int(sys.argv[2]) if len(sys.argv) > 2 else None)
