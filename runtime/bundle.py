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

from runtime import idmap, overlay

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

    @property
    def staging(self) -> Path:
        """Idmapped clones of the layers, attached only while the overlay is being mounted."""
        return self.dir / "idmap"

    def create(self, lowers: list[str], *, idmap_fd: int | None = None,
               root_owner: tuple[int, int] | None = None) -> None:
        """Make the dirs and mount; undo everything if the mount fails.

        For a user namespace, `idmap_fd` carries its mapping: the layers are mounted through
        idmapped clones, and the upper dir's root belongs to the container's root
        (`root_owner`, host ids), so `/` stays writable to it.
        """
        if not lowers:
            raise ValueError("an image needs at least one layer")
        for sub in ("rootfs", "upper", "work"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            if root_owner is not None:
                os.chown(self.upper, *root_owner)
            if idmap_fd is None:
                mount_overlay(str(self.rootfs), lowers, str(self.upper), str(self.dir / "work"))
            else:
                try:
                    staged = idmap.stage(lowers, self.staging, idmap_fd)
                    mount_overlay(str(self.rootfs), staged, str(self.upper),
                                  str(self.dir / "work"))
                finally:
                    idmap.unstage(self.staging)
        except OSError:
            self.remove()
            raise

    def remove(self) -> None:
        """Unmount (repeatedly, in case of stacked mounts) and delete; idempotent.

        Staged idmapped clones are detached first: deleting through one would delete the
        volume's own files.
        """
        idmap.unstage(self.staging)
        if self.staging.exists():
            raise OSError(errno.EBUSY, f"{self.staging} still has mounts; not deleting through "
                          "them")
        for _ in range(8):
            try:
                unmount(str(self.rootfs))
            except OSError:
                break
            if not os.path.ismount(self.rootfs):
                break
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)
