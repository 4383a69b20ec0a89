"""A pull that fills the state dir's disk fails clearly, lists nothing, and leaves it usable."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.fixtures.berthd import Berthd, run_berthd
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.timeout(240)
SIZE_MB = 30  # the `big` image is ~50 MB of incompressible layers


def used_kb(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def settled_kb(path: Path, timeout: float = 10.0) -> int:
    """Usage once it stops changing (downloads of sibling layers wind down after the error)."""
    last, deadline = -1, time.monotonic() + timeout
    while (now := used_kb(path)) != last and time.monotonic() < deadline:
        last = now
        time.sleep(0.5)
    return now


def tree_kb(path: Path) -> int:
    """Allocated KiB of the regular files below path."""
    return sum(p.stat().st_blocks // 2 for p in path.rglob("*") if p.is_file()) \
        if path.exists() else 0


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 30 MB tmpfs outside the berthd workdir (its teardown would unmount and flag it)."""
    where = tmp_path / f"small-{random.getrandbits(16):04x}"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0711", "berth-test-full",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_berthd(tmp_path: Path, registry: Registry, small_state: Path) -> Iterator[Berthd]:
    with run_berthd(tmp_path / "b", registry={"insecure": [registry.host]},
                    state_dir=str(small_state / "state")) as d:
        yield d


def test_pull_on_full_disk(full_berthd: Berthd, small_state: Path,
                           e2e_images: dict[str, PushedImage]):
    cli = full_berthd.client()
    pb = cli.pb
    big = e2e_images["big"].ref
    before = used_kb(small_state)
    with pytest.raises(grpc.RpcError) as info:
        cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=big)), timeout=120)
    err = info.value
    details = err.details() or ""
    print(f"PullImage on a {SIZE_MB} MB state dir: {err.code().name}: {details}")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "No space left on device" in details
    assert str(full_berthd.state_dir) in details
    assert cli.image.ListImages(pb.ListImagesRequest(), timeout=10).images == []
    status = cli.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=big)),
                                   timeout=10)
    assert not status.image.id
    left = settled_kb(small_state) - before
    images = full_berthd.state_dir / "images"
    kept = {d: tree_kb(images / d) for d in ("blobs", "snapshots", "ingest")}
    print(f"state dir after the failed pull: {left} KiB more than before "
          f"(tmpfs {SIZE_MB} MB); KiB per images/ subdir: {kept}")
    # completed layers and unpacked snapshots are gone; only resumable partial downloads stay
    assert kept["blobs"] < 64 and kept["snapshots"] < 64, kept

    small = e2e_images["busybox"].ref
    got = cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=small)), timeout=60)
    assert got.image_ref == e2e_images["busybox"].config_digest
    cli.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=small)), timeout=30)
