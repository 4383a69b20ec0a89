"""Malicious layer corpus: each attack must leave every byte outside the snapshot untouched."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime.images.unpack import UnpackError, apply_layer
from tests.images.tarkit import Layer


def _tree(top: Path, skip: Path) -> dict[str, tuple]:
    """Snapshot of every inode's metadata and content hash under top, except the snapshot."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            if Path(p) == skip or skip in Path(p).parents:
                continue
            st = os.lstat(p)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest,
                      tuple(sorted(os.listxattr(p, follow_symlinks=False))))
    return out


class Sandbox:
    """A sentinel host tree with the snapshot root nested inside it."""

    def __init__(self, tmp: Path) -> None:
        self.top = tmp
        self.host = tmp / "host"
        (self.host / "etc").mkdir(parents=True)
        (self.host / "etc" / "passwd").write_text("root:x:0:0\n")
        os.chmod(self.host / "etc" / "passwd", 0o644)
        (self.host / "bin").mkdir()
        (self.host / "bin" / "sh").write_bytes(b"\x7fELF")
        os.chmod(self.host / "bin" / "sh", 0o755)
        self.lower = tmp / "snap" / "lower" / "fs"
        self.root = tmp / "snap" / "upper" / "fs"
        self.lower.mkdir(parents=True)
        self.root.mkdir(parents=True)
        self.before = _tree(tmp, self.root)

    def apply(self, layer: Layer, **kw) -> None:
        apply_layer(layer.stream(), str(self.root), [str(self.lower)], **kw)

    def assert_host_untouched(self) -> None:
        assert _tree(self.top, self.root) == self.before


@pytest.fixture
def sb(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_dotdot(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match=r"\.\."):
        sb.apply(Layer().file("../../../host/etc/passwd", b"pwned"))
    with pytest.raises(UnpackError, match=r"\.\."):
        sb.apply(Layer().file("a/../../x", b"pwned"))
    sb.assert_host_untouched()


def test_absolute_path(sb: Sandbox) -> None:
    sb.apply(Layer().file(str(sb.host / "etc" / "passwd"), b"pwned"))
    inside = sb.root / str(sb.host / "etc" / "passwd").lstrip("/")
    assert inside.read_bytes() == b"pwned"
    sb.assert_host_untouched()


def test_symlink_escape_absolute(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="dangling symlink"):
        sb.apply(Layer().symlink("esc", str(sb.host / "etc")).file("esc/passwd", b"pwned"))
    # when the target exists inside the root, the symlink resolves there and nowhere else
    inner = str(sb.host / "etc").lstrip("/")
    sb.apply(Layer().dir(inner).symlink("esc2", str(sb.host / "etc")).file("esc2/passwd", b"pw"))
    assert (sb.root / inner / "passwd").read_bytes() == b"pw"
    sb.assert_host_untouched()


def test_symlink_escape_relative(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="dangling symlink"):
        sb.apply(Layer().symlink("esc", "../../../host/etc").file("esc/passwd", b"pwned"))
    sb.apply(Layer().dir("host/etc").symlink("e2", "../../../host/etc").file("e2/passwd", b"pw"))
    assert (sb.root / "host" / "etc" / "passwd").read_bytes() == b"pw"
    sb.assert_host_untouched()


def test_symlink_dir_then_file_through_it(sb: Sandbox) -> None:
    layer = Layer().dir("d").symlink("d/up", "../../../..").dir("d/up/host").dir("d/up/host/etc")
    sb.apply(layer.file("d/up/host/etc/passwd", b"pwned"))
    assert (sb.root / "host" / "etc" / "passwd").read_bytes() == b"pwned"
    sb.assert_host_untouched()


def test_symlink_in_lower_layer_not_followed_out(sb: Sandbox) -> None:
    os.symlink(str(sb.host), sb.lower / "esc")
    sb.before = _tree(sb.top, sb.root)
    sb.apply(Layer().file("esc/etc/passwd", b"pwned"))
    assert (sb.root / "esc" / "etc" / "passwd").read_bytes() == b"pwned"
    sb.assert_host_untouched()


def test_hardlink_outside_chain(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match=r"\.\."):
        sb.apply(Layer().link("pw", "../../../host/etc/passwd"))
    with pytest.raises(UnpackError, match="not in the layer chain"):
        sb.apply(Layer().link("pw", "/etc/shadow"))
    sb.assert_host_untouched()


def test_hardlink_to_host_file(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="not in the layer chain"):
        sb.apply(Layer().link("pw", str(sb.host / "etc" / "passwd")))
    layer = Layer().symlink("esc", str(sb.host / "etc")).link("pw", "esc/passwd")
    with pytest.raises(UnpackError, match="not in the layer chain"):
        sb.apply(layer)
    assert os.stat(sb.host / "etc" / "passwd").st_nlink == 1
    sb.assert_host_untouched()


def test_hardlink_through_symlink_then_write(sb: Sandbox) -> None:
    layer = Layer().file("real", b"inside").symlink("s", str(sb.host / "etc" / "passwd"))
    sb.apply(layer.link("h", "s").file("h", b"overwrite"))
    assert os.readlink(sb.root / "s") == str(sb.host / "etc" / "passwd")
    sb.assert_host_untouched()


@pytest.mark.timeout(20)
def test_device_node(sb: Sandbox) -> None:
    layer = Layer().node("dev/null", tarfile.CHRTYPE, 1, 3).node("dev/sda", tarfile.BLKTYPE, 8, 0)
    sb.apply(layer.node("fifo", tarfile.FIFOTYPE))
    st = os.lstat(sb.root / "dev" / "sda")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 8
    assert stat.S_ISFIFO(os.lstat(sb.root / "fifo").st_mode)
    with pytest.raises(UnpackError, match="not a directory"):
        sb.apply(Layer().file("dev/null/x", b"pwned"))
    # a file over a node replaces it: never a write into the device (a fifo would block forever)
    sb.apply(Layer().node("pipe", tarfile.FIFOTYPE).file("pipe", b"data")
             .node("dev/zero", tarfile.CHRTYPE, 1, 5).file("dev/zero", b"z"))
    assert (sb.root / "pipe").read_bytes() == b"data" and (sb.root / "dev/zero").is_file()
    sb.assert_host_untouched()


def test_file_replacing_dir_symlink(sb: Sandbox) -> None:
    layer = Layer().symlink("etc", str(sb.host / "etc")).file("etc", b"now a file")
    sb.apply(layer)
    assert (sb.root / "etc").read_bytes() == b"now a file"
    sb.apply(Layer().symlink("d", str(sb.host / "etc")).dir("d", 0o700))
    assert stat.S_ISDIR(os.lstat(sb.root / "d").st_mode)
    sb.assert_host_untouched()


def test_chmod_through_symlink_cve_2021_32760(sb: Sandbox) -> None:
    target = str(sb.host / "etc" / "passwd")
    layer = Layer().symlink("pw", target).file("pw", b"x", mode=0o4777)
    sb.apply(layer)
    sb.apply(Layer().symlink("bin", str(sb.host / "bin")).dir("bin", mode=0o777))
    sb.apply(Layer().symlink("sh", str(sb.host / "bin" / "sh"))
             .node("sh", tarfile.FIFOTYPE, mode=0o4777))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    sb.assert_host_untouched()


def test_giant_file_over_cap(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="cap"):
        sb.apply(Layer().file("big", b"\0" * (2 << 20)), max_bytes=1 << 20)
    with pytest.raises(UnpackError, match="cap"):
        sb.apply(Layer().header_only("sparse-bomb", 1 << 40), max_bytes=1 << 30)
    assert not (sb.root / "sparse-bomb").exists()
    sb.assert_host_untouched()


def test_inode_bomb_over_entry_cap(sb: Sandbox) -> None:
    layer = Layer()
    for i in range(50):
        layer.file(f"f{i}", b"")
    with pytest.raises(UnpackError, match="cap of 20 entries"):
        sb.apply(layer, max_entries=20)
    sb.assert_host_untouched()


def test_zero_bomb_compressed(sb: Sandbox) -> None:
    import gzip
    import io

    data = gzip.compress(Layer().file("z", b"\0" * (8 << 20)).bytes(), compresslevel=9)
    assert len(data) < 64 << 10
    with pytest.raises(UnpackError, match="cap"):
        apply_layer(io.BytesIO(data), str(sb.root), [], max_bytes=4 << 20)
    sb.assert_host_untouched()


def test_whiteout_of_dotdot(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="names no entry"):
        sb.apply(Layer().dir("a").file("a/.wh..", b""))
    with pytest.raises(UnpackError, match=r"\.\."):
        sb.apply(Layer().file("a/../../.wh.host", b""))
    with pytest.raises(UnpackError, match="dangling"):
        sb.apply(Layer().symlink("esc", str(sb.host)).file("esc/.wh.etc", b""))
    sb.apply(Layer().symlink("esc2", "../../..").file("esc2/.wh.host", b""))
    assert stat.S_ISCHR(os.lstat(sb.root / "host").st_mode)
    assert (sb.host / "etc" / "passwd").exists()
    sb.assert_host_untouched()


def test_opaque_whiteout_attacks(sb: Sandbox) -> None:
    with pytest.raises(UnpackError, match="dangling"):
        sb.apply(Layer().symlink("esc", str(sb.host / "etc")).file("esc/.wh..wh..opq", b""))
    sb.apply(Layer().symlink("up", "../../..").file("up/.wh..wh..opq", b""))
    sb.apply(Layer().file(str(sb.host / ".wh..wh..opq"), b""))
    xa = {"trusted.overlay.redirect": "/host", "trusted.overlay.opaque": "y", "user.ok": "1"}
    sb.apply(Layer().dir("x", xattrs=xa))
    assert os.listxattr(sb.root / "x") == ["user.ok"]
    sb.assert_host_untouched()


def test_hardlink_to_lower_fifo_or_device(sb: Sandbox) -> None:
    os.mkfifo(sb.lower / "fifo")
    os.mknod(sb.lower / "tty", stat.S_IFCHR | 0o600, os.makedev(5, 0))
    sb.before = _tree(sb.top, sb.root)
    for target in ("fifo", "tty"):
        with pytest.raises(UnpackError, match="not a file"):
            sb.apply(Layer().link("h", target))
    sb.assert_host_untouched()


def test_failed_unpack_leaks_no_fds(sb: Sandbox) -> None:
    import gzip
    import io

    before = len(os.listdir("/proc/self/fd"))
    data = gzip.compress(Layer().dir("d").file("d/f", os.urandom(1 << 20)).bytes())
    for _ in range(20):
        with pytest.raises(UnpackError):
            apply_layer(io.BytesIO(data[: len(data) * 3 // 4]), str(sb.root), [str(sb.lower)])
    assert len(os.listdir("/proc/self/fd")) <= before + 1
