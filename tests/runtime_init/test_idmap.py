"""Idmapped mounts on the running kernel: what user-namespaced containers rely on.

Also run in the 6.1 guest: there tmpfs cannot be idmapped (6.3 added it), ext4 and an overlay
over idmapped ext4 layers can.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import idmap, libc
from tests.fixtures.hostclean import unmount_all

pytestmark = pytest.mark.timeout(60)
HOST = 65536 * 50
MAP = [idmap.Mapping(0, HOST, 65536)]


def _kernel() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int(minor)


@pytest.fixture
def ns_fd() -> Iterator[int]:
    fd = asyncio.run(idmap.userns_fd(MAP, MAP))
    yield fd
    os.close(fd)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 image, loop-mounted (the loop device goes with the unmount)."""
    img, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    yield mnt
    unmount_all(mnt)


def test_overlay_over_idmapped_layers_keeps_owners(ext4: Path, ns_fd: int) -> None:
    """Layer files owned by host N read as HOST+N through the overlay; the staging goes away."""
    for d in ("lower", "upper", "work", "merged"):
        (ext4 / d).mkdir()
    (ext4 / "lower" / "f").write_text("x")
    os.chown(ext4 / "lower" / "f", 1000, 1000)
    staged = idmap.stage([str(ext4 / "lower")], ext4 / "stage", ns_fd)
    try:
        libc.mount("overlay", str(ext4 / "merged"), "overlay", 0,
                   f"lowerdir={staged[0]},upperdir={ext4}/upper,workdir={ext4}/work")
    finally:
        idmap.unstage(ext4 / "stage")
    try:
        assert not (ext4 / "stage").exists()
        st = os.stat(ext4 / "merged" / "f")
        assert (st.st_uid, st.st_gid) == (HOST + 1000, HOST + 1000)
    finally:
        libc.umount2(str(ext4 / "merged"), libc.MNT_DETACH)


def test_tmpfs_idmap_needs_linux_6_3(tmp_path: Path, ns_fd: int) -> None:
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "berth-idmap", str(d)], check=True)
    try:
        if _kernel() >= (6, 3):
            os.close(idmap.clone_idmapped(str(d), ns_fd))
        else:
            with pytest.raises(idmap.IdmapError, match="cannot idmap"):
                idmap.clone_idmapped(str(d), ns_fd)
    finally:
        unmount_all(d)
