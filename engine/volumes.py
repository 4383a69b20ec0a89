"""Local volumes: a directory under the state dir per volume, recorded in the metadata store.

A volume outlives its containers and berthd restarts. Names follow dockerd's rule, so a name can
never be a path (`/` and `..` are refused). Anonymous volumes (an image's VOLUME, `-v /path`) get a
random 64-hex name and go with their container when it is removed with `v`. The first time an
empty volume is mounted over a path the image has content at, that content is copied in, as Docker
does.
"""

from __future__ import annotations

import builtins
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from engine.store import Store, VolumeRecord
from runtime.images._sys import openat2, proc_fd_path

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # dockerd's volume name pattern
MAX_NAME = 255
DRIVERS = ("local",)


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not NAME.match(name):
        raise InvalidArgument(
            f"create {name[:300]}: {name[:300]!r} includes invalid characters for a local volume "
            "name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a "
            "host directory, use absolute path")
    return name


def _usage(path: Path) -> int:
    size = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                size += os.lstat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                continue
    return size


class Volumes:
    """The volume table plus the directories it names."""

    def __init__(self, store: Store, state_dir: str | Path) -> None:
        self.store = store
        self.root = Path(state_dir) / "volumes"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o701)

    def mountpoint(self, name: str) -> Path:
        return self.root / name / "_data"

    def get(self, name: str) -> VolumeRecord:
        rec = self.store.volumes.get(name)
        if rec is None:
            raise NotFound(f"get {name[:300]}: no such volume")
        return rec

    def list(self) -> list[VolumeRecord]:
        return self.store.volumes.find()

    def create(self, name: str = "", driver: str = "local", labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> VolumeRecord:
        """Idempotent for a name that exists with the same driver, as dockerd is."""
        if driver not in DRIVERS:
            raise InvalidArgument(f"error looking up volume plugin {driver[:100]}: plugin "
                                  f"\"{driver[:100]}\" not found (Berth serves the local driver)")
        if options:
            raise InvalidArgument(f"invalid option for the local driver: "
                                  f"{sorted(options)[0][:100]!r} (Berth's local volumes are "
                                  "plain directories and take no options)")
        if not name:
            name, anonymous = secrets.token_hex(32), True
        check_name(name)
        existing = self.store.volumes.get(name)
        if existing is not None:
            if existing.driver != driver:
                raise AlreadyExists(f"a volume named {name} already exists with the "
                                    f"{existing.driver} driver")
            return existing
        rec = VolumeRecord(id=name, driver=driver, created_ns=time.time_ns(),
                           labels=dict(labels or {}), extra={"anonymous": anonymous})
        data = self.mountpoint(name)
        data.mkdir(parents=True, exist_ok=True)
        try:
            self.store.volumes.add(rec)
        except Exception:
            shutil.rmtree(data.parent, ignore_errors=True)
            raise
        return rec

    def ensure(self, name: str) -> VolumeRecord:
        """`-v name:/path` creates the volume on first use."""
        rec = self.store.volumes.get(check_name(name))
        return rec if rec is not None else self.create(name)

    def remove(self, name: str, users: Callable[[str], builtins.list[str]],
               force: bool = False) -> Path | None:
        """409 while a container uses it (force too, as dockerd); missing is a 404 unless force.

        The record goes and the data is renamed aside at once; the caller hands the returned
        path to `purge`, off the event loop (a big volume takes a while to delete)."""
        rec = self.store.volumes.get(name)
        if rec is None:
            if force:
                return None
            raise NotFound(f"get {name[:300]}: no such volume")
        using = users(name)
        if using:
            raise FailedPrecondition(f"remove {name}: volume is in use - "
                                     f"[{', '.join(using)}]")
        return self._detach(name)

    def _detach(self, name: str) -> Path | None:
        """Record first, then the data: a crash between leaves a dir that prune finds."""
        self.store.volumes.delete(name)
        target = self.root / name
        if not target.exists():
            return None
        trash = self.root / f".rm-{secrets.token_hex(8)}"
        os.rename(target, trash)
        return trash

    @staticmethod
    def purge(trash: Path | None) -> None:
        """Delete what `remove` set aside (blocking)."""
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def prune(self, users: Callable[[str], builtins.list[str]],
              keep: Callable[[VolumeRecord], bool] = lambda _r: False
              ) -> tuple[builtins.list[str], builtins.list[Path]]:
        """Every volume no container uses (API 1.41: named ones too): the records go and the
        data is renamed aside now (cheap, on the event loop); hand the returned dirs to
        `reclaim` in a thread."""
        removed, trash = [], []
        for rec in self.list():
            if users(rec.id) or keep(rec):
                continue
            removed.append(rec.id)
            if (gone := self._detach(rec.id)) is not None:
                trash.append(gone)
        return removed, trash

    def reclaim(self, trash: builtins.list[Path]) -> int:
        """Bytes in what `prune` set aside, then delete it, with any `.rm-*` a crash left
        behind (blocking: it walks the data)."""
        size = sum(_usage(t / "_data") for t in trash)
        for stray in self.root.glob(".rm-*"):
            shutil.rmtree(stray, ignore_errors=True)
        return size

    def copy_up(self, name: str, rootfs: Path, path: str) -> bool:
        """Fill an empty volume from the image's content at `path` (blocking).

        Docker's rule: only a volume with nothing in it is filled, and it takes the owner and
        mode of the image's directory even when that is empty. The path is resolved beneath
        the rootfs (a symlink in the image cannot point the copy at the host)."""
        data = self.mountpoint(name)
        if any(data.iterdir()):
            return False
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = openat2(rootfd, path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        finally:
            os.close(rootfd)
        try:
            _copy_tree(Path(proc_fd_path(fd)), data)
            _copy_meta(os.fstat(fd), data)
        finally:
            os.close(fd)
        return True


def _copy_meta(st: os.stat_result, dst: Path | str) -> None:
    """Owner, mode and times of `st` onto `dst` (not followed when it is a symlink)."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_tree(src: Path, dst: Path) -> None:
    """Everything below `src` into the existing dir `dst`: files, dirs, symlinks (as links),
    device nodes and fifos (made, never read), hard links kept as links; owners and modes."""
    links: dict[tuple[int, int], str] = {}
    dirs: builtins.list[tuple[os.stat_result, str]] = []
    for root, dnames, fnames in os.walk(src):
        rel = os.path.relpath(root, src)
        for n in dnames + fnames:
            s, d = os.path.join(root, n), os.path.normpath(os.path.join(dst, rel, n))
            st = os.lstat(s)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(d, 0o700)
                dirs.append((st, d))
                continue
            if st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                os.link(links[st.st_dev, st.st_ino], d, follow_symlinks=False)
                continue
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d, follow_symlinks=False)
            else:
                os.mknod(d, st.st_mode, st.st_rdev)
            _copy_meta(st, d)
            links[st.st_dev, st.st_ino] = d
    for st, d in reversed(dirs):  # deepest first: a dir's times settle after its entries
        _copy_meta(st, d)
