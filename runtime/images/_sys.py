"""Private ctypes wrapper for openat2, so the unpacker never resolves a path outside its root."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYS_OPENAT2 = 437  # same number on x86_64 and the asm-generic tables (aarch64, riscv64)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


if platform.machine() not in ("x86_64", "aarch64", "arm64", "riscv64"):
    raise ImportError(f"openat2 syscall number unknown on {platform.machine()}")


def openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    """Open path beneath dirfd with symlinks resolved as if dirfd were '/'."""
    if not path:
        path = "."
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(
            _SYS_OPENAT2,
            ctypes.c_int(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EINTR, errno.EAGAIN):
            raise OSError(err, os.strerror(err), path)


def proc_fd_path(fd: int, name: str = "") -> str:
    """Path through our own fd table; only used for calls that lack an *at form (lsetxattr)."""
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")
