"""A container's rootfs on the host: an overlay of image snapshots plus its own upper dir.

`runtime.overlay` fits an image of any depth on any kernel; berthd is threaded, so a deep image
on a kernel before 6.8 is mounted by a helper process (see there).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime import overlay

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def mount_overlay(target: str, lowers: list[str], upper: str, work: str) -> None:
    """Mount an overlay at target; lowers are listed top layer first, as overlayfs wants."""
    overlay.mount(target, overlay.OverlaySpec(lowers, upper, work, ["index=off"]), threaded=True)


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

    def usage(self) -> tuple[int, int]:
        """Bytes and inodes the container has written: its upper dir, as CRI stats report."""
        size = inodes = 0
        for root, dirs, files in os.walk(self.upper):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(root, name))
                    size += st.st_blocks * 512
                    inodes += 1
        return size, inodes
