"""Layers unpacked before their parents exist end up as if unpacked on top of them."""

from __future__ import annotations

import io
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.images.unpack import UnpackError, unpack_detached
from tests.images.tarkit import Layer

LOWER = (Layer().dir("usr", mode=0o750, uid=7, gid=8, mtime=1_500_000_000)
         .file("usr/data", b"lower-data", mode=0o640, uid=3, gid=4)
         .file("usr/other", b"other").bytes())


def _roots(tmp: Path, n: int) -> list[Path]:
    roots = [tmp / f"l{i}" / "fs" for i in range(n)]
    for r in roots:
        r.mkdir(parents=True)
    return roots


def _stack(tmp: Path, *layers: bytes) -> list[Path]:
    """All layers unpack at once (the top one first), then resolve bottom-up, like a pull."""
    roots = _roots(tmp, len(layers))
    with ThreadPoolExecutor(len(layers)) as pool:
        jobs = [pool.submit(unpack_detached, _stream(b), str(r))
                for b, r in reversed(list(zip(layers, roots, strict=True)))]
        detached = [j.result() for j in reversed(jobs)]
    for i, d in enumerate(detached):
        d.resolve([str(r) for r in reversed(roots[:i])])
    return roots


def _stream(b: bytes) -> io.BytesIO:
    return io.BytesIO(b)


def test_omitted_parent_dir_takes_lower_metadata(tmp_path: Path) -> None:
    _, up = _stack(tmp_path, LOWER, Layer().file("usr/new", b"n").bytes())
    st = os.stat(up / "usr")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 7, 8)
    assert st.st_mtime_ns == 1_500_000_000 * 10**9


def test_named_dir_keeps_its_own_metadata(tmp_path: Path) -> None:
    top = Layer().file("usr/new", b"n").dir("usr", mode=0o711, uid=9, gid=9).bytes()
    _, up = _stack(tmp_path, LOWER, top)
    st = os.stat(up / "usr")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o711, 9)


def test_links_to_one_lower_file_share_one_copy_up(tmp_path: Path) -> None:
    top = Layer().link("usr/a", "usr/data").link("usr/b", "usr/data").bytes()
    _, up = _stack(tmp_path, LOWER, top)
    a, b, data = (os.stat(up / "usr" / n) for n in ("a", "b", "data"))
    assert a.st_ino == b.st_ino == data.st_ino and data.st_nlink == 3
    assert (up / "usr" / "b").read_bytes() == b"lower-data"
    assert (stat.S_IMODE(data.st_mode), data.st_uid, data.st_gid) == (0o640, 3, 4)


def test_target_replaced_later_in_the_layer(tmp_path: Path) -> None:
    """The link keeps the lower content; the layer's own file at the target wins there."""
    top = Layer().link("usr/a", "usr/data").file("usr/data", b"new").bytes()
    _, up = _stack(tmp_path, LOWER, top)
    assert (up / "usr" / "a").read_bytes() == b"lower-data"
    assert (up / "usr" / "data").read_bytes() == b"new"
    assert os.stat(up / "usr" / "a").st_ino != os.stat(up / "usr" / "data").st_ino


def test_link_replaced_later_in_the_layer(tmp_path: Path) -> None:
    top = Layer().link("usr/a", "usr/data").file("usr/a", b"mine").bytes()
    _, up = _stack(tmp_path, LOWER, top)
    assert (up / "usr" / "a").read_bytes() == b"mine"
    assert not (up / "usr" / "data").exists()  # nothing was copied up for a link that went


def test_link_within_the_layer_needs_no_parent(tmp_path: Path) -> None:
    (root,) = _roots(tmp_path, 1)
    d = unpack_detached(_stream(Layer().file("x", b"1").link("y", "x").bytes()), str(root))
    assert not d.applier.links
    d.resolve([])
    assert os.stat(root / "x").st_ino == os.stat(root / "y").st_ino


def test_link_to_nothing_fails_at_resolve(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="not in the layer chain"):
        _stack(tmp_path, LOWER, Layer().link("usr/a", "usr/missing").bytes())


def test_link_to_lower_fifo_refused(tmp_path: Path) -> None:
    lower = Layer().node("p", b"6").bytes()  # FIFOTYPE
    with pytest.raises(UnpackError, match="not a file"):
        _stack(tmp_path, lower, Layer().link("q", "p").bytes())


def test_a_corrupt_layer_leaves_no_fds_open(tmp_path: Path) -> None:
    """The fds kept for the commit's fsync are closed when the layer turns out corrupt."""
    good = Layer().file("a", b"x" * 4096).file("b", b"y" * 4096).bytes()
    truncated = good[: len(good) // 2 + 700]  # ends inside the tar, after the first file
    root = tmp_path / "fs"
    root.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UnpackError, match="corrupt layer"):
        unpack_detached(io.BytesIO(truncated), str(root))
    assert len(os.listdir("/proc/self/fd")) == before


def _acl(*entries: tuple[int, int]) -> str:
    """A POSIX ACL xattr value (version 2; tag, perm, id per entry), as a PAX header carries."""
    import struct

    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, 0xFFFFFFFF)
                                           for t, p in entries)
    return raw.decode("utf-8", "surrogateescape")


def test_files_keep_tar_owner_and_mode_under_setgid_dir_and_default_acl(tmp_path: Path) -> None:
    """The fast create path (final mode at open, no chown for root's files) must not let a
    setgid parent's group or a default ACL's mask stand in for what the tar says."""
    default_acl = _acl((0x01, 7), (0x04, 0), (0x20, 0))  # user::rwx group::--- other::---
    layer = (Layer().dir("s", mode=0o2775, gid=50).file("s/f", b"x", mode=0o644)
             .dir("a", mode=0o755, xattrs={"system.posix_acl_default": default_acl})
             .file("a/f", b"y", mode=0o644).bytes())
    (root,) = _stack(tmp_path, layer)
    s, a = os.stat(root / "s" / "f"), os.stat(root / "a" / "f")
    assert (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) == (0, 0, 0o644)
    assert os.stat(root / "s").st_gid == 50
    assert stat.S_IMODE(a.st_mode) == 0o644
    assert os.getxattr(root / "a", "system.posix_acl_default")  # the ACL itself was applied
