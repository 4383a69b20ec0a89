"""A container's rootfs on the host: an overlay of image snapshots plus its own upper dir.

The overlay is built with the new mount API (fsopen/fsconfig `lowerdir+`), so an image of any
depth fits: mount(2) options are capped at one page, about 200 absolute lowerdir paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT, SYS_MOVE_MOUNT = 430, 431, 432, 429
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC = 1, 1
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100
MNT_DETACH = 2


def _sys(nr: int, *args: object, what: str) -> int:
    ret = int(_libc.syscall(nr, *args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def mount_overlay(target: str, lowers: list[str], upper: str, work: str) -> None:
    """Mount an overlay at target; lowers are listed top layer first, as overlayfs wants."""
    fs = _sys(SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC, what="fsopen overlay")
    try:
        def put(key: str, value: str | None = None) -> None:
            if value is None:
                _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_FLAG, key.encode(), None, 0,
                     what=f"overlay option {key}")
            else:
                _sys(SYS_FSCONFIG, fs, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0,
                     what=f"overlay {key}={value}")

        for lower in lowers:
            put("lowerdir+", lower)
        put("upperdir", upper)
        put("workdir", work)
        put("index", "off")
        _sys(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0, what="create overlay")
        mnt = _sys(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, 0, what="fsmount overlay")
        try:
            _sys(SYS_MOVE_MOUNT, mnt, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH,
                 what=f"move_mount overlay to {target}")
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def unmount(target: str) -> None:
    """Detach target; a path that is not mounted is already done."""
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


@dataclass(frozen=True)
class Bundle:
    """`<root>/<id>/{rootfs,upper,work}`: the merged view, and the container's writes."""

    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    def create(self, lowers: list[str]) -> None:
        """Make the dirs and mount; undo everything if the mount fails."""
        if not lowers:
            raise ValueError("an image needs at least one layer")
        for sub in ("rootfs", "upper", "work"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            mount_overlay(str(self.rootfs), lowers, str(self.upper), str(self.dir / "work"))
        except OSError:
            self.remove()
            raise

    def remove(self) -> None:
        """Unmount (repeatedly, in case of stacked mounts) and delete; idempotent."""
        for _ in range(8):
            try:
                unmount(str(self.rootfs))
            except OSError:
                break
            if not os.path.ismount(self.rootfs):
                break
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)
