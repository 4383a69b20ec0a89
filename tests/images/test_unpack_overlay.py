"""Unpacked layers, stacked as real overlay lowers, must show the merged view an image defines."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from runtime.images.snapshots import Snapshots, chain_ids
from runtime.images.unpack import UnpackError, apply_layer
from tests.images.tarkit import Layer

CAP = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


@contextmanager
def overlay(lowers: list[str], target: Path) -> Iterator[Path]:
    target.mkdir()
    opts = "lowerdir=" + ":".join(lowers)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _stack(tmp: Path, layers: list[bytes]) -> list[str]:
    snaps = Snapshots(tmp / "snapshots")
    done: list[str] = []
    diffs: list[str] = []
    for data in layers:
        t = snaps.prepare()
        res = apply_layer(io.BytesIO(data), str(t / "fs"), list(reversed(done)))
        diffs.append(res.diff_id)
        done.append(str(snaps.commit(t, chain_ids(diffs)[-1])))
    return list(reversed(done))


def test_whiteouts_and_opaque_in_merged_view(tmp_path: Path) -> None:
    base = (Layer().dir("etc").file("etc/a", b"A").file("etc/b", b"B")
            .dir("opq").file("opq/old", b"old").dir("gone").file("gone/x", b"x")
            .file("keep", b"keep").bytes())
    top = (Layer().file("etc/.wh.a", b"").file(".wh.gone", b"")
           .file("etc/b", b"B2").file("etc/.wh.b", b"")  # same-layer entry survives its whiteout
           .dir("opq").file("opq/.wh..wh..opq", b"").file("opq/new", b"new").bytes())
    lowers = _stack(tmp_path, [base, gzip.compress(top)])
    with overlay(lowers, tmp_path / "merged") as m:
        assert sorted(os.listdir(m / "etc")) == ["b"]
        assert (m / "etc" / "b").read_bytes() == b"B2"
        assert not (m / "gone").exists()
        assert sorted(os.listdir(m / "opq")) == ["new"]
        assert (m / "keep").read_bytes() == b"keep"


def test_metadata_preserved(tmp_path: Path) -> None:
    base = (Layer().dir("usr", mode=0o750, uid=7, gid=8, mtime=1_000_000)
            .file("usr/ping", b"ELF", mode=0o4755, uid=0, gid=0, mtime=1_234_567,
                  xattrs={"security.capability": CAP.decode("utf-8", "surrogateescape"),
                          "user.note": "hi"})
            .file("usr/data", b"lower-data", mode=0o640, uid=33, gid=33)
            .symlink("usr/link", "ping", uid=5, gid=6)
            .link("usr/hard", "usr/ping")
            .node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666)
            .node("fifo", tarfile.FIFOTYPE, mode=0o620).bytes())
    top = Layer().link("usr/data-link", "usr/data").bytes()
    cctx = zstandard.ZstdCompressor()
    lowers = _stack(tmp_path, [base, cctx.compress(top)])
    low = Path(lowers[1])
    st = os.stat(low / "usr" / "ping")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o4755, 0, 1_234_567)
    assert os.getxattr(low / "usr" / "ping", "security.capability") == CAP
    assert os.getxattr(low / "usr" / "ping", "user.note") == b"hi"
    assert os.stat(low / "usr" / "hard").st_ino == st.st_ino
    dst = os.stat(low / "usr")
    assert (stat.S_IMODE(dst.st_mode), dst.st_uid, dst.st_gid, dst.st_mtime) == (0o750, 7, 8, 1e6)
    lst = os.lstat(low / "usr" / "link")
    assert (os.readlink(low / "usr" / "link"), lst.st_uid, lst.st_gid) == ("ping", 5, 6)
    dev = os.lstat(low / "dev" / "null")
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(dev.st_mode) == 0o666
    assert stat.S_IMODE(os.lstat(low / "fifo").st_mode) == 0o620
    up = Path(lowers[0])
    # hardlink to a lower file: copied up, then linked, with the lower's metadata
    a, b = os.stat(up / "usr" / "data"), os.stat(up / "usr" / "data-link")
    assert a.st_ino == b.st_ino and (a.st_uid, stat.S_IMODE(a.st_mode)) == (33, 0o640)
    assert (up / "usr" / "data-link").read_bytes() == b"lower-data"
    pst = os.stat(up / "usr")  # parent created by copy-up carries the lower's metadata
    assert (stat.S_IMODE(pst.st_mode), pst.st_uid, pst.st_mtime) == (0o750, 7, 1e6)
    with overlay(lowers, tmp_path / "merged") as m:
        assert (m / "usr" / "data-link").read_bytes() == b"lower-data"
        assert (m / "usr" / "ping").read_bytes() == b"ELF"


def test_corrupt_and_mislabelled(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    data = gzip.compress(Layer().file("a", b"a" * 4096).bytes())
    with pytest.raises(UnpackError, match="corrupt"):
        apply_layer(io.BytesIO(data[: len(data) // 2]), str(root), [])
    with pytest.raises(UnpackError, match="no matching magic"):
        apply_layer(io.BytesIO(Layer().bytes()), str(root), [],
                    media_type="application/vnd.oci.image.layer.v1.tar+zstd")
