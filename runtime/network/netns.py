"""Named network namespaces pinned as bind mounts, made by a helper process: berthd is threaded."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil

from runtime import libc

MNT_DETACH = 2


class NetnsError(Exception):
    """Creating the namespace failed; carries the helper's own error text."""


def netns_path(run_dir: str, name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid netns name {name!r}")
    return os.path.join(run_dir, "netns", name)


def _prepare(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)


def _helper_argv(path: str) -> list[str]:
    """util-linux unshare binds the new netns onto `path`; fork+unshare stays out of berthd."""
    if shutil.which("unshare") is None:
        raise NetnsError("util-linux unshare(1) is required to create network namespaces")
    return ["unshare", f"--net={path}", "true"]


async def create(run_dir: str, name: str) -> str:
    """Returns the pinned path; fails if a namespace of that name already exists."""
    path = netns_path(run_dir, name)
    _prepare(path)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_helper_argv(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise NetnsError(f"unshare --net={path}: {err.decode(errors='replace').strip()}")
    except BaseException:
        _unlink(path)
        raise
    return path


def remove(path: str) -> None:
    """Unmount (lazily, the pod may still hold it) and unlink; a missing netns is success."""
    try:
        libc.umount2(path, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


def is_pinned(path: str) -> bool:
    """True when `path` is an nsfs mount, i.e. a live pinned namespace."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        head, _sep, tail = line.partition(" - ")
        if head.split()[4] == path and tail.split()[0] == "nsfs":
            return True
    return False
