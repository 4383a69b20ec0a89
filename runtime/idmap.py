"""Idmapped mounts for containers in a user namespace (CRI userns_options, hostUsers: false).

Image layers and volumes belong to host ids (root: 0). Seen through a mount idmapped with the
container's mapping, host id N reads as N+offset from the host and as N inside, so the image
keeps its owners and container root may write what host root owns, without a chown of anything.

- The user namespace that carries the mapping comes from a short helper (`unshare --user cat`):
  berthd is threaded and never unshares itself. Only its mapping matters, not its identity.
- `mount_setattr(MOUNT_ATTR_IDMAP)` applies to a detached clone (`open_tree(OPEN_TREE_CLONE)`),
  which is attached at a staging dir so overlayfs or the container init can name it by path.
- An overlay mount itself cannot be idmapped (EINVAL); an overlay over idmapped lowers can
  (Linux 5.19+): overlayfs takes private clones of its layers, so the staged lowers are detached
  right after the overlay is mounted.
- Filesystems must support idmapping: ext4/xfs/btrfs since 5.12-5.15, tmpfs since 6.3, never
  9p or NFS. Otherwise mount_setattr fails with EINVAL, reported with the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime import libc
from runtime.propagation import mount_table

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _AT_RECURSIVE, _AT_EMPTY_PATH = 1, 0x8000, 0x1000
_MOUNT_ATTR_IDMAP = 0x00100000
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
_AT_FDCWD = -100


class IdmapError(OSError):
    """An idmapped mount could not be made (the message names the path and why)."""


@dataclass(frozen=True)
class Mapping:
    """One uid or gid range: container ids [container, container+size) are host [host, ...)."""

    container: int
    host: int
    size: int

    def line(self) -> str:
        return f"{self.container} {self.host} {self.size}\n"


def host_of(maps: list[Mapping], container_id: int) -> int:
    """The host id a container id maps to; ValueError if no range holds it."""
    for m in maps:
        if m.container <= container_id < m.container + m.size:
            return m.host + container_id - m.container
    raise ValueError(f"container id {container_id} is not mapped")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _sys(what: str, nr: int, *args: object) -> int:
    ret = int(_libc.syscall(nr, *args))
    if ret < 0:
        err = ctypes.get_errno()
        hint = " (this filesystem or kernel cannot idmap mounts)" if err == errno.EINVAL else ""
        raise IdmapError(err, f"{what}: {os.strerror(err)}{hint}")
    return ret


async def userns_fd(uids: list[Mapping], gids: list[Mapping], timeout: float = 10.0) -> int:
    """An fd of a fresh user namespace with these maps, held by nobody else once we return."""
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--user", "cat", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    try:
        own = os.stat("/proc/self/ns/user").st_ino
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(f"/proc/{proc.pid}/ns/user").st_ino != own:
                    break
            if proc.returncode is not None or loop.time() > deadline:
                raise IdmapError(errno.ECHILD, "user namespace helper (unshare --user) failed")
            await asyncio.sleep(0.001)
        for name, maps in (("uid_map", uids), ("gid_map", gids)):
            with open(f"/proc/{proc.pid}/{name}", "w") as fh:
                fh.write("".join(m.line() for m in maps))
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), timeout)


def clone_idmapped(path: str, ns_fd: int) -> int:
    """A detached recursive clone of the mount tree at `path`, idmapped through `ns_fd`."""
    (fd,) = bind_trees([(path, True)])
    try:
        set_idmap(fd, ns_fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def stage(sources: list[str], stage_dir: Path, ns_fd: int) -> list[str]:
    """Attach an idmapped clone of each source at stage_dir/<i>; returns those paths in order.

    On failure everything staged so far is detached again.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    try:
        for i, src in enumerate(sources):
            target = stage_dir / str(i)
            if os.path.isdir(src):
                target.mkdir()
            else:
                target.touch()
            mfd = clone_idmapped(src, ns_fd)
            try:
                attach(mfd, str(target))
            finally:
                os.close(mfd)
            out.append(str(target))
    except BaseException:
        unstage(stage_dir)
        raise
    return out


def unstage(stage_dir: Path) -> None:
    """Detach every mount at or under stage_dir (deepest first), then delete the dir."""
    root = str(stage_dir)
    points = sorted({e.mount_point for e in mount_table()
                     if e.mount_point == root or e.mount_point.startswith(root + "/")},
                    key=lambda p: p.count("/"), reverse=True)
    for point in points:
        with contextlib.suppress(OSError):
            libc.umount2(point, libc.MNT_DETACH)
    if not any(e.mount_point.startswith(root + "/") or e.mount_point == root
               for e in mount_table()):
        shutil.rmtree(stage_dir, ignore_errors=True)


def root_owner(uids: list[Mapping], gids: list[Mapping]) -> tuple[int, int]:
    """Host uid and gid of the container's root."""
    return host_of(uids, 0), host_of(gids, 0)


def wants_idmap(options: list[str]) -> bool:
    """OCI 1.1 mount options asking for an idmapped bind (CRI volumes under a user ns)."""
    return "idmap" in options or "ridmap" in options


def bind_trees(mounts: list[tuple[str, bool]]) -> list[int]:
    """Detached clones of bind sources (path, recursive), made while we are still host root.

    A container init in a user namespace cannot walk to sources under 0700 dirs, nor bind from
    a mount of another namespace; a detached clone it can attach anywhere (`attach`).
    """
    fds: list[int] = []
    try:
        for path, recursive in mounts:
            fds.append(_sys(f"open_tree {path}", _SYS_OPEN_TREE, _AT_FDCWD, path.encode(),
                            _OPEN_TREE_CLONE | os.O_CLOEXEC | (_AT_RECURSIVE if recursive else 0)))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def set_idmap(fd: int, ns_fd: int, path: str) -> None:
    """Idmap a detached mount tree (all of it) through the user namespace at ns_fd."""
    attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP, userns_fd=ns_fd)
    _sys(f"idmap {path}", _SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
         ctypes.byref(attr), ctypes.sizeof(attr))


def attach(fd: int, target: str) -> None:
    """Attach a detached mount tree at target (a path, /proc/self/fd/N included).

    The target is opened first: move_mount does not follow a magic link named as its target.
    """
    tfd = os.open(target, os.O_PATH | os.O_CLOEXEC)
    try:
        _sys(f"move_mount {target}", _SYS_MOVE_MOUNT, fd, b"", tfd, b"",
             _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tfd)
