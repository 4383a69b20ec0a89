"""Snapshot dirs keyed by chain ID, each committed by one atomic rename."""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

from runtime.usage import du

_TMP = ".tmp-"
USAGE = "usage.json"  # beside fs/: the snapshot's (bytes, inodes), measured once at commit
_libc = ctypes.CDLL(None, use_errno=True)
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS = 0x80086601, 0x40086602  # <linux/fs.h>, 64-bit
_FS_TOPDIR_FL = 0x00020000  # chattr +T


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: each names a layer together with all layers below it."""
    out: list[str] = []
    for d in diff_ids:
        if out:
            d = "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()
        out.append(d)
    return out


def _hex(digest: str) -> str:
    algo, _, h = digest.partition(":")
    if algo != "sha256" or len(h) != 64 or not all(c in "0123456789abcdef" for c in h):
        raise ValueError(f"invalid chain id {digest!r}")
    return h


class Snapshots:
    """`<root>/<chainid-hex>/fs` holds one layer's diff, ready to be an overlay lowerdir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        _spread(root)
        self._locks: dict[Path, int] = {}
        self._flush_lock = threading.Lock()
        self._flushes_started = self._flushes_done = 0
        self._usage: dict[str, tuple[int, int]] = {}  # by chain id; snapshots never change
        self._usage_lock = threading.Lock()

    def fs(self, chain_id: str) -> Path:
        """Directory of the committed diff for chain_id."""
        return self.root / _hex(chain_id) / "fs"

    def has(self, chain_id: str) -> bool:
        """Whether a committed snapshot exists (half-written ones never match)."""
        return self.fs(chain_id).is_dir()

    def lowers(self, chains: list[str]) -> list[str]:
        """Overlay lowerdir order: the top layer first."""
        return [str(self.fs(c)) for c in reversed(chains)]

    def prepare(self) -> Path:
        """A fresh private dir to unpack into; its fs/ subdir is the layer root."""
        while True:
            tmp = self.root / f"{_TMP}{uuid.uuid4().hex}"
            tmp.mkdir()
            # held until commit/discard so another process's start-up cleanup leaves it alone;
            # that cleanup may still have taken it between the mkdir and the lock: gone before
            # the open, or (it removes under the lock) left with no links once we hold it
            try:
                fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                break
            os.close(fd)
        self._locks[tmp] = fd
        (tmp / "fs").mkdir()
        os.chmod(tmp / "fs", 0o755)
        return tmp

    def lock_fd(self, tmp: Path) -> int:
        """The fd whose flock keeps start-up cleanup off a prepared dir (for an unpack worker to
        hold as well: the lock lasts until every copy of it is closed)."""
        return self._locks[tmp]

    def _unlock(self, tmp: Path) -> None:
        fd = self._locks.pop(tmp, None)
        if fd is not None:
            os.close(fd)

    def sync(self, tmp: Path) -> None:
        """Flush the unpacked files before commit: a committed snapshot is trusted forever after,
        so it must never turn up with empty files after a power loss (containerd #5854).
        One syncfs serves every caller that came before it started, so layers that finish
        together share a flush."""
        want = self._flushes_started + 1  # any flush that starts from now on covers us
        with self._flush_lock:
            if self._flushes_done >= want:
                return
            self._flushes_started += 1
            started = self._flushes_started
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if _libc.syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), str(tmp))
            finally:
                os.close(fd)
            self._flushes_done = started

    def measure(self, tmp: Path, chain_id: str) -> None:
        """Record the unpacked layer's usage beside its fs/ before its commit as chain_id: a
        snapshot is immutable, so ImageFsInfo never walks it again (not flushed: a lost
        record is measured again)."""
        usage = du(str(tmp / "fs"))
        _write_usage(tmp, usage)
        self._usage[chain_id] = usage

    def usage(self, chain_id: str, walk: bool = True) -> tuple[int, int] | None:
        """(bytes, inodes) of a committed snapshot: memory, else its record (one small read),
        else, with walk, one walk that back-fills the record (snapshots committed before
        records existed; blocking: thread only), else None."""
        hit = self._usage.get(chain_id)
        if hit is not None:
            return hit
        d = self.root / _hex(chain_id)
        try:
            got = json.loads((d / USAGE).read_bytes())
            hit = self._usage[chain_id] = (int(got["bytes"]), int(got["inodes"]))
            return hit
        except (OSError, ValueError, KeyError, TypeError):
            if not walk:
                return None
        with self._usage_lock:  # a back-fill and a caller never walk the same tree twice
            hit = self._usage.get(chain_id)
            if hit is None:
                hit = du(str(d / "fs"))
                with contextlib.suppress(OSError):  # removed meanwhile: nothing to record
                    _write_usage(d, hit)
                self._usage[chain_id] = hit
            return hit

    def total(self, walk: bool = True) -> tuple[int, int]:
        """(bytes, inodes) of every committed snapshot from their records; without walk, a
        snapshot not measured yet (its back-fill is running) counts as empty."""
        size = inodes = 0
        for chain in self.list():
            got = self.usage(chain, walk)
            if got is not None:
                size, inodes = size + got[0], inodes + got[1]
        return size, inodes

    def unmeasured(self) -> bool:
        """Whether some committed snapshot has no usage record yet (made by an older Berth)."""
        return any(not (self.root / c[7:] / USAGE).exists() for c in self.list())

    def commit(self, tmp: Path, chain_id: str) -> Path:
        """Publish tmp as chain_id; if another pull won the race, keep theirs."""
        dst = self.root / _hex(chain_id)
        try:
            os.rename(tmp, dst)  # under the lock: a cleanup waiting on it then finds tmp gone
        except OSError:
            if not self.has(chain_id):
                self._unlock(tmp)
                raise
            self.discard(tmp)
            return dst / "fs"
        self._unlock(tmp)
        return dst / "fs"

    def discard(self, tmp: Path) -> None:
        """Drop an unfinished unpack (removed under its lock, for the same reason)."""
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            self._unlock(tmp)

    def remove(self, chain_id: str) -> None:
        """Rename away first so no half-deleted snapshot is ever visible under its id."""
        src = self.root / _hex(chain_id)
        self._usage.pop(chain_id, None)
        if not src.exists():
            return
        tmp = self.root / f"{_TMP}del-{uuid.uuid4().hex}"
        os.rename(src, tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    def list(self) -> set[str]:
        """Chain IDs of committed snapshots."""
        return {"sha256:" + p.name for p in self.root.iterdir() if not p.name.startswith(_TMP)}

    def cleanup(self) -> None:
        """Remove leftovers of interrupted unpacks; run at start, before any pull. A dir still
        locked is another store's live unpack, or an unpack worker of a berthd killed a moment
        ago that has not finished exiting: a thread waits for its lock and removes it then,
        unless its owner committed (renamed) or discarded it meanwhile."""
        for p in self.root.iterdir():
            if not p.name.startswith(_TMP):
                continue
            fd = _lock_unused(p)
            if fd is not None:
                _remove_locked(p, fd)
                continue
            with contextlib.suppress(OSError):
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                threading.Thread(target=_remove_when_free, args=(p, fd), daemon=True,
                                 name=f"cleanup {p.name}").start()


def _spread(root: Path) -> None:
    """Mark root as a top of directory hierarchies (chattr +T) for ext4's Orlov allocator, so
    that each snapshot dir made in it goes to a block group with free inodes instead of its
    parent's group. Measured on the bench machine's ext4 (no journal): a pull of 30,000 small
    files spent most of its kernel time in `recently_deleted`, the allocator skipping inodes
    freed in the last 5 to 305 s one by one, and those are where the image removed just before
    had its files. Filesystems without the flag (xfs, btrfs, tmpfs) are left as they are."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & _FS_TOPDIR_FL:
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM,
                           errno.EACCES):
            raise
    finally:
        os.close(fd)


def _write_usage(d: Path, usage: tuple[int, int]) -> None:
    tmp = d / f"{USAGE}.tmp"
    tmp.write_text(json.dumps({"bytes": usage[0], "inodes": usage[1]}))
    os.rename(tmp, d / USAGE)


def _remove_locked(p: Path, fd: int) -> None:
    """Remove p, whose dir fd holds its lock, then let the lock go."""
    try:
        shutil.rmtree(p, ignore_errors=True)
    finally:
        os.close(fd)


def _remove_when_free(p: Path, fd: int) -> None:
    """Wait for the holder of p's lock to let go, then remove p if it is still the same
    leftover: a holder that committed has renamed it, one that discarded has unlinked it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        mine = os.fstat(fd)
        now = os.lstat(p)
    except OSError:
        os.close(fd)
        return
    if mine.st_nlink and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
        _remove_locked(p, fd)
    else:
        os.close(fd)


def _lock_unused(p: Path) -> int | None:
    """p's fd, locked, when no live unpack (in any process) holds p; the caller removes p
    before closing it, so a `prepare` that lost the race sees its dir unlinked."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None
