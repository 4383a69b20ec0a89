"""Measure cold pull+unpack of the 10-layer ~50 MB fixture image and raw unpack throughput.

Run: .venv/bin/python -m tests.images.bench_pull   (not collected by pytest)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.images.content import ContentStore
from runtime.images.reference import normalize
from runtime.images.registry import RegistryClient, RegistryConfig
from runtime.images.store import ImageStore
from runtime.images.unpack import apply_layer
from tests.fixtures._proc import stop, wait_until
from tests.fixtures.images import build_layouts, push_images
from tests.fixtures.registry import run_registry


def _pull(state: Path, ref: str) -> float:
    async def main() -> float:
        store = ImageStore(state)
        t0 = time.perf_counter()
        await store.pull(ref)
        dt = time.perf_counter() - t0
        await store.aclose()
        return dt

    return asyncio.run(main())


def _download_only(state: Path, ref: str) -> float:
    """Same blobs through the content store with no unpack, to see how much unpack overlaps."""

    async def main() -> float:
        r = normalize(ref)
        client = RegistryClient(RegistryConfig())
        store = ContentStore(state)
        sem = asyncio.Semaphore(3)
        t0 = time.perf_counter()
        res = await client.resolve(r, None)
        descs = [res.manifest["config"], *res.manifest["layers"]]

        def opener(d: str) -> Any:
            return lambda off: client.open_blob(r, d, off, None)

        ings = [store.fetch(x["digest"], x["size"], opener(x["digest"]), limit=sem)
                for x in descs]
        await asyncio.gather(*(i.wait() for i in ings))
        dt = time.perf_counter() - t0
        await client.aclose()
        return dt

    return asyncio.run(main())


CTR_CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/sock"
[ttrpc]
  address = "{d}/sock.ttrpc"
[debug]
  address = "{d}/sock.debug"
"""


def _containerd_pull(d: Path, ref: str) -> float:
    """The peer: a private containerd 1.6, `ctr images pull` (fetch + overlayfs unpack)."""
    d.mkdir()
    (d / "config.toml").write_text(CTR_CONFIG.format(d=d))
    with open(d / "log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")],
                                stdout=log, stderr=log)
    try:
        wait_until(lambda: (d / "sock").exists(), 15, "containerd", proc, d / "log")
        t0 = time.perf_counter()
        subprocess.run(["ctr", "-a", str(d / "sock"), "-n", "bench", "images", "pull",
                        "--plain-http", ref], check=True, capture_output=True)
        return time.perf_counter() - t0
    finally:
        stop(proc)
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                  if str(d) in ln]
        for m in reversed(mounts):
            subprocess.run(["umount", m], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _unpack_rate(layout: Path, work: Path) -> tuple[float, float, int]:
    """MB/s of uncompressed tar applied, from gzip blobs and from already-decompressed tars."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    man = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    total, dt_gz, dt_raw = 0, 0.0, 0.0
    for i, ly in enumerate(man["layers"]):
        path = blobs / ly["digest"][7:]
        for kind in ("gz", "raw"):
            root = work / f"{kind}{i}"
            root.mkdir(parents=True)
            if kind == "gz":
                with open(path, "rb") as f:
                    t0 = time.perf_counter()
                    res = apply_layer(f, str(root), [])
                    dt_gz += time.perf_counter() - t0
                    total += res.tar_bytes
                    (work / f"raw{i}.tar").write_bytes(_gunzip(path))
            else:
                with open(work / f"raw{i}.tar", "rb") as f:
                    t0 = time.perf_counter()
                    apply_layer(f, str(root), [])
                    dt_raw += time.perf_counter() - t0
    return total / dt_gz / 1e6, total / dt_raw / 1e6, total


def _gunzip(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        with run_registry(t / "reg") as reg:
            pushed = push_images(reg.host, ["big"])["big"]
            runs, dl, ctr = [], [], []
            for i in range(3):
                if shutil.which("containerd"):
                    ctr.append(_containerd_pull(t / f"ctrd{i}", pushed.ref))
                runs.append(_pull(t / f"state{i}", pushed.ref))
                shutil.rmtree(t / f"state{i}")
                dl.append(_download_only(t / f"dl{i}", pushed.ref))
                shutil.rmtree(t / f"dl{i}")
        gz, raw, total = _unpack_rate(build_layouts(["big"])["big"], t / "unpack")
        print(f"cold pull+unpack {pushed.ref}: runs {[round(r, 3) for r in runs]} s, "
              f"p50 {statistics.median(runs):.3f} s")
        print(f"download only (no unpack): runs {[round(r, 3) for r in dl]} s, "
              f"p50 {statistics.median(dl):.3f} s")
        if ctr:
            print(f"containerd 1.6 ctr pull: runs {[round(r, 3) for r in ctr]} s, "
                  f"p50 {statistics.median(ctr):.3f} s")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        print(f"unpack {total / 1e6:.1f} MB of tar: {gz:.0f} MB/s from gzip, "
              f"{raw:.0f} MB/s from tar")


if __name__ == "__main__":
    main()
