"""Symlink-safe mount targets inside a rootfs, and OCI mount option parsing."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from dataclasses import dataclass

from runtime import libc

_FLAG_OPTS: dict[str, tuple[bool, int]] = {
    # option: (clear?, flag)
    "ro": (False, libc.MS_RDONLY), "rw": (True, libc.MS_RDONLY),
    "nosuid": (False, libc.MS_NOSUID), "suid": (True, libc.MS_NOSUID),
    "nodev": (False, libc.MS_NODEV), "dev": (True, libc.MS_NODEV),
    "noexec": (False, libc.MS_NOEXEC), "exec": (True, libc.MS_NOEXEC),
    "sync": (False, libc.MS_SYNCHRONOUS), "async": (True, libc.MS_SYNCHRONOUS),
    "dirsync": (False, libc.MS_DIRSYNC),
    "remount": (False, libc.MS_REMOUNT),
    "mand": (False, libc.MS_MANDLOCK), "nomand": (True, libc.MS_MANDLOCK),
    "atime": (True, libc.MS_NOATIME), "noatime": (False, libc.MS_NOATIME),
    "diratime": (True, libc.MS_NODIRATIME), "nodiratime": (False, libc.MS_NODIRATIME),
    "relatime": (False, libc.MS_RELATIME), "norelatime": (True, libc.MS_RELATIME),
    "strictatime": (False, libc.MS_STRICTATIME), "nostrictatime": (True, libc.MS_STRICTATIME),
    "lazytime": (False, libc.MS_LAZYTIME), "nolazytime": (True, libc.MS_LAZYTIME),
    "nosymfollow": (False, libc.MS_NOSYMFOLLOW), "symfollow": (True, libc.MS_NOSYMFOLLOW),
    "bind": (False, libc.MS_BIND), "rbind": (False, libc.MS_BIND | libc.MS_REC),
}
_PROPAGATION: dict[str, int] = {
    "private": libc.MS_PRIVATE, "rprivate": libc.MS_PRIVATE | libc.MS_REC,
    "slave": libc.MS_SLAVE, "rslave": libc.MS_SLAVE | libc.MS_REC,
    "shared": libc.MS_SHARED, "rshared": libc.MS_SHARED | libc.MS_REC,
    "unbindable": libc.MS_UNBINDABLE, "runbindable": libc.MS_UNBINDABLE | libc.MS_REC,
}
# options that only make sense to other runtimes or to the kubelet; silently accepted
_IGNORED = {"tmpcopyup", "defaults", "x-mount.mkdir", "rro", "idmap", "ridmap"}
# flags a bind remount must keep, or the kernel refuses to clear locked ones
_ST_TO_MS = {os.ST_NOSUID: libc.MS_NOSUID, os.ST_NODEV: libc.MS_NODEV,
             os.ST_NOEXEC: libc.MS_NOEXEC, os.ST_NOATIME: libc.MS_NOATIME,
             os.ST_NODIRATIME: libc.MS_NODIRATIME, os.ST_RELATIME: libc.MS_RELATIME}


@dataclass
class MountOpts:
    """mount(2) flags, propagation flags and the data string parsed from OCI options."""

    flags: int = 0
    propagation: list[int] | None = None
    data: str = ""

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & libc.MS_BIND)


def parse_options(options: list[str]) -> MountOpts:
    """Split OCI mount options into flags, propagation and fs-specific data, like mount(8)."""
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAG_OPTS:
            clear, flag = _FLAG_OPTS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            prop.append(_PROPAGATION[opt])
        elif opt not in _IGNORED:
            data.append(opt)
    return MountOpts(flags, prop or None, ",".join(data))


def clean(path: str) -> str:
    """Lexically clean a container path to a relative one; '..' can never climb above '/'."""
    return posixpath.normpath("/" + path).lstrip("/")


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open path as seen from inside the rootfs; symlinks resolve against the rootfs, never out."""
    return libc.openat2(rootfd, clean(path) or ".", flags)


def ensure(rootfd: int, path: str, *, directory: bool, mode: int = 0o755) -> int:
    """Create path inside the rootfs one component at a time with *at calls; return an O_PATH fd.

    Each step re-resolves from rootfd with RESOLVE_IN_ROOT, so a symlink planted anywhere on the
    way (absolute, or with enough '..' to climb out) still lands inside the rootfs.
    """
    rel = clean(path)
    parts = [p for p in rel.split("/") if p]
    parent = os.dup(rootfd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            prefix = "/".join(parts[: i + 1])
            try:
                fd = open_in_root(rootfd, prefix)
            except FileNotFoundError:
                if not last or directory:
                    # FileExistsError: a dangling symlink; _create_via_link follows it in-root
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, mode, dir_fd=parent)
                else:
                    try:
                        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o644, dir_fd=parent))
                    except OSError as e:
                        if e.errno != errno.ELOOP:
                            raise
                fd = _create_via_link(rootfd, prefix, directory or not last, mode)
            os.close(parent)
            parent = fd
        return os.dup(parent)
    finally:
        os.close(parent)


def _create_via_link(rootfd: int, prefix: str, directory: bool, mode: int) -> int:
    """Open a freshly created entry; if it was a dangling symlink, create its target in-root."""
    try:
        return open_in_root(rootfd, prefix)
    except FileNotFoundError:
        pass
    # dangling symlink: read where it points and create that, still resolved inside the rootfs
    lfd = libc.openat2(rootfd, prefix, os.O_PATH | os.O_NOFOLLOW)
    try:
        target = os.readlink("", dir_fd=lfd)
    finally:
        os.close(lfd)
    base = posixpath.dirname(prefix)
    dest = target if target.startswith("/") else posixpath.join("/", base, target)
    if dest.strip("/") == prefix.strip("/"):
        raise OSError(errno.ELOOP, f"symlink loop at /{prefix}")
    return ensure(rootfd, dest, directory=directory, mode=mode)


def is_dir_fd(fd: int) -> bool:
    """Whether an O_PATH fd names a directory."""
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def locked_flags(fd: int) -> int:
    """MS_* flags of the mount holding fd, which a bind remount must repeat."""
    st = os.fstatvfs(fd)
    return sum(ms for st_flag, ms in _ST_TO_MS.items() if st.f_flag & st_flag)


def mount_at(rootfd: int, path: str, source: str | None, fstype: str | None, flags: int,
             data: str | None = None) -> None:
    """Mount onto an already-verified in-root target through its /proc/self/fd magic link."""
    fd = open_in_root(rootfd, path)
    try:
        libc.mount(source, libc.proc_fd(fd), fstype, flags, data or None)
    finally:
        os.close(fd)


def remount_at(rootfd: int, path: str, flags: int, *, bind: bool = True) -> None:
    """Re-open the (now mounted) target and change its flags, keeping the locked ones."""
    fd = open_in_root(rootfd, path)
    try:
        extra = locked_flags(fd) | (libc.MS_BIND if bind else 0)
        libc.mount(None, libc.proc_fd(fd), None, libc.MS_REMOUNT | extra | flags)
    finally:
        os.close(fd)


def set_propagation(rootfd: int, path: str, props: list[int]) -> None:
    """Apply private/slave/shared after the mount exists (the kernel wants separate calls)."""
    fd = open_in_root(rootfd, path)
    try:
        for p in props:
            libc.mount(None, libc.proc_fd(fd), None, p)
    finally:
        os.close(fd)
