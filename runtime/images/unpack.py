"""Apply one layer tar into a snapshot dir without ever opening a host path outside it."""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import zstandard

from runtime.images._sys import openat2, proc_fd_path
from runtime.images.compression import Counted, MislabelledLayer, OverCap, Readable, decompressed

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_MAX_LAYER_BYTES = 16 << 30
DEFAULT_MAX_ENTRIES = 1_000_000  # an inode bomb of empty files passes any byte cap
_CHUNK = 1 << 20
_DIR = os.O_PATH | os.O_DIRECTORY


class UnpackError(Exception):
    """A layer that is malformed, hostile or over its size cap."""


@dataclass
class UnpackResult:
    """What the unpack saw, so the caller can check the diff ID and account size."""

    diff_id: str
    tar_bytes: int
    file_bytes: int
    entries: int


def clean_parts(name: str) -> list[str]:
    """Split a member name into safe components; '..' anywhere is refused, '/' is stripped."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"path {name!r} contains '..'")
    return parts


@dataclass
class _Applier:
    root: int
    lowers: list[int]
    cap: int
    file_bytes: int = 0
    dir_times: list[tuple[str, int]] = field(default_factory=list)

    def open_dir(self, parts: list[str], create: bool) -> int:
        """O_PATH fd of a directory, resolved from the snapshot root; missing parents copy up."""
        try:
            return openat2(self.root, "/".join(parts), _DIR)
        except FileNotFoundError:
            if not create:
                raise
        except NotADirectoryError:
            raise UnpackError(f"{'/'.join(parts)!r} is not a directory") from None
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            try:
                os.close(openat2(self.root, prefix, _DIR))
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise UnpackError(f"{prefix!r} is not a directory") from None
            pfd = openat2(self.root, "/".join(parts[:i]), _DIR)
            try:
                self._mkparent(pfd, parts[i], parts[: i + 1])
            finally:
                os.close(pfd)
        return openat2(self.root, "/".join(parts), _DIR)

    def _mkparent(self, pfd: int, comp: str, rel: list[str]) -> None:
        try:
            os.mkdir(comp, 0o755, dir_fd=pfd)
        except FileExistsError:
            raise UnpackError(f"parent {'/'.join(rel)!r} is a dangling symlink") from None
        st = self._lower_stat(rel)
        fd = openat2(pfd, comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                self.dir_times.append(("/".join(rel), st.st_mtime_ns))
            else:
                os.fchmod(fd, 0o755)
        finally:
            os.close(fd)

    def _lower_stat(self, rel: list[str]) -> os.stat_result | None:
        for lfd in self.lowers:
            try:
                fd = openat2(lfd, "/".join(rel), os.O_PATH | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        return None

    def clear(self, pfd: int, base: str, keep_dir: bool) -> None:
        """Remove whatever the name holds now, never following a symlink."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            dfd = openat2(pfd, base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                _rmtree_fd(dfd)
            finally:
                os.close(dfd)
            os.rmdir(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def apply(self, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        parts = clean_parts(m.name)
        if not parts:
            if m.isdir():
                fd = openat2(self.root, ".", os.O_RDONLY | os.O_DIRECTORY)
                self._meta_fd(fd, m, "")
            return
        base = parts[-1]
        pfd = self.open_dir(parts[:-1], create=True)
        try:
            if base == OPAQUE:
                os.setxattr(proc_fd_path(pfd), "trusted.overlay.opaque", b"y")
            elif base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX) :]
                if target.startswith(WHITEOUT_PREFIX):
                    return  # other AUFS metadata (.wh..wh.plnk etc.): meaningless for overlay
                if target in ("", ".", ".."):
                    raise UnpackError(f"whiteout {m.name!r} names no entry")
                if _exists(pfd, target):
                    return  # a whiteout only hides lower layers, never its own layer's entry
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            else:
                self._entry(pfd, base, parts, m, tf)
        finally:
            os.close(pfd)

    def _entry(
        self, pfd: int, base: str, parts: list[str], m: tarfile.TarInfo, tf: tarfile.TarFile
    ) -> None:
        rel = "/".join(parts)
        self.clear(pfd, base, keep_dir=m.isdir())
        if m.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = openat2(pfd, base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            self._meta_fd(fd, m, rel)
        elif m.isreg():
            if self.file_bytes + m.size > self.cap:
                raise UnpackError(f"{rel!r} ({m.size} bytes) exceeds the layer size cap {self.cap}")
            self.file_bytes += m.size
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=pfd)
            try:
                src = tf.extractfile(m)
                assert src is not None
                _copy(src, fd)
            except BaseException:
                os.close(fd)
                raise
            self._meta_fd(fd, m, None)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._meta_nofollow(pfd, base, m)
        elif m.islnk():
            self._hardlink(pfd, base, m)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            self._meta_nofollow(pfd, base, m)
        else:
            raise UnpackError(f"{rel!r}: unsupported tar entry type {m.type!r}")

    def _hardlink(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        tparts = clean_parts(m.linkname)
        if not tparts:
            raise UnpackError(f"hardlink {m.name!r} to the root")
        try:
            tpfd = self.open_dir(tparts[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            tpfd = -1
        try:
            if tpfd < 0 or not _exists(tpfd, tparts[-1]):
                if tpfd >= 0:
                    os.close(tpfd)
                    tpfd = -1
                tpfd = self._copy_up(tparts)
            st = os.stat(tparts[-1], dir_fd=tpfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"hardlink {m.name!r} to a directory")
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            if tpfd >= 0:
                os.close(tpfd)

    def _copy_up(self, tparts: list[str]) -> int:
        """Bring a lower layer's file into this layer so a hardlink can point at it."""
        rel = "/".join(tparts)
        for lfd in self.lowers:
            try:
                probe = openat2(lfd, rel, os.O_PATH | os.O_NOFOLLOW)
            except OSError:
                continue
            st = os.fstat(probe)
            os.close(probe)
            if not stat.S_ISREG(st.st_mode):  # never open a lower fifo or device for reading
                raise UnpackError(f"hardlink target {rel!r} in a lower layer is not a file")
            src = openat2(lfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                tpfd = self.open_dir(tparts[:-1], create=True)
                try:
                    self._copy_file(src, st, tpfd, tparts[-1])
                except BaseException:
                    os.close(tpfd)
                    raise
                return tpfd
            finally:
                os.close(src)
        raise UnpackError(f"hardlink target {rel!r} is not in the layer chain")

    def _copy_file(self, src: int, st: os.stat_result, dfd: int, name: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            _copy(os.fdopen(os.dup(src), "rb"), fd, close_src=True)
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            for xname in os.listxattr(src):
                os.setxattr(fd, xname, os.getxattr(src, xname))
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, dir_rel: str | None) -> None:
        """Owner, then mode and xattrs (chown clears setuid and capabilities), then mtime."""
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, stat.S_IMODE(m.mode))
            for k, v in _xattrs(m):
                _set_xattr(fd, None, k, v)
            ns = int(m.mtime * 1e9)
            if dir_rel is None:
                os.utime(fd, ns=(ns, ns))
            else:
                self.dir_times.append((dir_rel, ns))
        finally:
            os.close(fd)

    def _meta_nofollow(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not m.issym():
            # fchmodat has no NOFOLLOW; the node was just created by mknod, so no symlink is here
            os.chmod(base, stat.S_IMODE(m.mode), dir_fd=pfd)
        for k, v in _xattrs(m):
            _set_xattr(pfd, base, k, v)
        ns = int(m.mtime * 1e9)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last, since writing their children changed them."""
        for rel, ns in reversed(self.dir_times):
            try:
                fd = openat2(self.root, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


def _xattrs(m: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for k, v in m.pax_headers.items():
        if not k.startswith("SCHILY.xattr."):
            continue
        name = k[len("SCHILY.xattr.") :]
        if name.startswith("trusted.overlay."):
            continue  # would let a layer steer overlayfs (redirect, metacopy, opaque)
        yield name, v.encode("utf-8", "surrogateescape")


def _set_xattr(fd: int, base: str | None, name: str, value: bytes) -> None:
    try:
        if base is None:
            os.setxattr(fd, name, value)
        else:
            os.setxattr(proc_fd_path(fd, base), name, value, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


def _exists(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _copy(src: IO[bytes], fd: int, close_src: bool = False) -> None:
    try:
        while chunk := src.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        if close_src:
            src.close()


def _rmtree_fd(dfd: int) -> None:
    for name in os.listdir(dfd):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = openat2(dfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                _rmtree_fd(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)


def apply_layer(
    stream: Readable,
    root: str,
    lowers: list[str],
    media_type: str = "",
    max_bytes: int = DEFAULT_MAX_LAYER_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> UnpackResult:
    """Unpack a (possibly compressed) layer stream into root; lowers are parents, top-first."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_fds = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lowers]
    ap = _Applier(root_fd, lower_fds, max_bytes)
    entries = 0
    try:
        counted = Counted(decompressed(stream, media_type), max_bytes)
        with tarfile.open(fileobj=counted, mode="r|") as tf:  # type: ignore[call-overload]
            for m in tf:
                entries += 1
                if entries > max_entries:
                    raise UnpackError(f"layer has more than the cap of {max_entries} entries")
                ap.apply(m, tf)
        counted.drain()
        ap.finish()
    except (OverCap, MislabelledLayer) as e:
        raise UnpackError(str(e)) from e
    except (tarfile.TarError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) as e:
        raise UnpackError(f"corrupt layer: {e}") from e
    finally:
        for fd in [root_fd, *lower_fds]:
            os.close(fd)
    return UnpackResult("sha256:" + counted.h.hexdigest(), counted.n, ap.file_bytes, entries)
