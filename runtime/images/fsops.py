"""fd-relative file helpers for the unpacker: none follows a symlink or leaves its dir fd."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator

from runtime.images._sys import openat2, proc_fd_path

WRITEBACK_EVERY = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, no wait
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def xattrs(m: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    """The member's xattrs, minus overlay ones that would let a layer steer overlayfs."""
    for k, v in m.pax_headers.items():
        if not k.startswith("SCHILY.xattr."):
            continue
        name = k[len("SCHILY.xattr.") :]
        if name.startswith("trusted.overlay."):
            continue  # redirect, metacopy, opaque
        yield name, v.encode("utf-8", "surrogateescape")


def set_xattr(fd: int, base: str | None, name: str, value: bytes) -> None:
    """Set on fd itself, or on base under dir fd without following it; unsupported is skipped."""
    try:
        if base is None:
            os.setxattr(fd, name, value)
        else:
            os.setxattr(proc_fd_path(fd, base), name, value, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


def lstat_at(dfd: int, name: str) -> os.stat_result | None:
    """lstat of name in dfd, None when absent."""
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def write_all(chunks: Iterable[bytes | memoryview], fd: int, flushed: bool = False) -> None:
    """Write every chunk to fd (short writes retried). flushed: the file will be fsynced, so
    start its writeback every WRITEBACK_EVERY bytes: the disk then writes a big file while the
    rest of it is still downloading, and the fsync before the commit waits only for its tail
    (the kernel itself starts none before dirty_background_ratio of RAM is dirty)."""
    done = started = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view, done = view[n:], done + n
        if flushed and done - started >= WRITEBACK_EVERY:
            _libc.sync_file_range(fd, started, done - started, _SYNC_FILE_RANGE_WRITE)
            started = done  # a failure here only leaves the writeback to the fsync


def copy_fd(src: int, dst: int) -> None:
    """Kernel-side copy of a whole regular file (no bytes through Python)."""
    off = 0
    while n := os.copy_file_range(src, dst, 1 << 30, off, off):
        off += n


def clone_meta(src: int, st: os.stat_result, dst: int) -> None:
    """Owner, then mode (chown clears setuid), xattrs and times of src onto dst."""
    os.fchown(dst, st.st_uid, st.st_gid)
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
    for xname in os.listxattr(src):
        os.setxattr(dst, xname, os.getxattr(src, xname))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def rmtree_fd(dfd: int) -> None:
    """Empty a directory through its fd, never following a symlink."""
    for name in os.listdir(dfd):
        remove_at(dfd, name, os.stat(name, dir_fd=dfd, follow_symlinks=False))


def remove_at(pfd: int, name: str, st: os.stat_result) -> None:
    """Remove the entry name of the dir pfd (st: its lstat), a whole tree if it is a dir,
    never following a symlink."""
    if stat.S_ISDIR(st.st_mode):
        sub = openat2(pfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            rmtree_fd(sub)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=pfd)
    else:
        os.unlink(name, dir_fd=pfd)


def process_umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o777  # unknown: never trust a create mode, always fchmod
