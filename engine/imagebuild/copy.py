"""COPY and ADD: Docker's copy rules, with both ends resolved beneath their own roots.

Sources are looked up beneath the context (or a stage's rootfs for `--from`) and destinations
beneath the step's rootfs, always with openat2(RESOLVE_IN_ROOT): a symlink in the context or in
the image resolves as it would inside the container, never onto a host path. The digest of what
a step copies (paths, modes, link targets and contents) is its cache key's part, computed before
anything is written so an unchanged COPY is a cache hit.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from engine.imagebuild.context import decompressing
from runtime.images._sys import openat2, proc_fd_path
from runtime.images.unpack import UnpackError, apply_layer

_DIR = os.O_RDONLY | os.O_DIRECTORY
_WILD = set("*?[")


class CopyError(ValueError):
    """A COPY or ADD that cannot be done as written; the message says why."""


@dataclass(frozen=True)
class Owner:
    """--chown's ids; None keeps each file's own (COPY --from) or uses root (the context)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class Source:
    """One matched source: its path under the source root and what it is."""

    rel: str
    is_dir: bool


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _entries(root: int, rel: str) -> list[str]:
    fd = openat2(root, rel, _DIR)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def stat_in(root: int, rel: str) -> os.stat_result | None:
    try:
        fd = openat2(root, rel, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def expand_sources(root: int, patterns: list[str]) -> list[Source]:
    """Each pattern's matches, wildcards allowed in any component (filepath.Match syntax)."""
    out: list[Source] = []
    for pat in patterns:
        parts = _parts(pat)
        found = [""]
        for comp in parts:
            nxt: list[str] = []
            for base in found:
                if _WILD & set(comp):
                    st = stat_in(root, base)
                    if st is None or not stat.S_ISDIR(st.st_mode):
                        continue
                    nxt += [f"{base}/{n}".lstrip("/") for n in _entries(root, base)
                            if fnmatch.fnmatchcase(n, comp)]
                else:
                    nxt.append(f"{base}/{comp}".lstrip("/"))
            found = nxt
        hits = [(rel, st) for rel in found if (st := stat_in(root, rel)) is not None]
        if not hits:
            raise CopyError(f"file not found in build context or excluded by .dockerignore: "
                            f"stat {pat}: file does not exist")
        out += [Source(rel, stat.S_ISDIR(st.st_mode)) for rel, st in hits]
    return out


def _walk(root: int, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    """rel and everything under it, parents first; symlinks below rel are not followed."""
    fd = openat2(root, rel, os.O_PATH)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    yield rel, st
    if not stat.S_ISDIR(st.st_mode):
        return
    dfd = openat2(root, rel, _DIR)
    try:
        children = [(n, os.stat(n, dir_fd=dfd, follow_symlinks=False))
                    for n in sorted(os.listdir(dfd))]
    finally:
        os.close(dfd)
    for name, cst in children:
        child = f"{rel}/{name}" if rel else name
        if stat.S_ISDIR(cst.st_mode):
            yield from _walk(root, child)
        else:
            yield child, cst


def digest_sources(root: int, sources: list[Source]) -> str:
    """What the copied tree holds, for the cache key (mtimes left out, as dockerd does)."""
    h = hashlib.sha256()
    for src in sources:
        for rel, st in _walk(root, src.rel):
            h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                parent, _, name = rel.rpartition("/")
                dfd = openat2(root, parent, _DIR)
                try:
                    h.update(os.readlink(name, dir_fd=dfd).encode())
                finally:
                    os.close(dfd)
            elif stat.S_ISREG(st.st_mode):
                fd = openat2(root, rel, os.O_RDONLY)
                try:
                    while chunk := os.read(fd, 1 << 20):
                        h.update(chunk)
                finally:
                    os.close(fd)
    return "sha256:" + h.hexdigest()


class Copier:
    """Writes into a rootfs (the step's mounted overlay) beneath its root fd."""

    def __init__(self, dst_root: int, owner: Owner | None, chmod: int | None,
                 keep_owner: bool) -> None:
        self.dst, self.owner, self.chmod, self.keep_owner = dst_root, owner, chmod, keep_owner

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        return (st.st_uid, st.st_gid) if self.keep_owner else (0, 0)

    def mkdirs(self, rel: str) -> None:
        """Missing parents are made 0755 and owned by --chown's ids (root otherwise)."""
        done: list[str] = []
        for comp in _parts(rel):
            done.append(comp)
            path = "/".join(done)
            st = stat_in(self.dst, path)
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    raise CopyError(f"cannot copy into /{path}: it is not a directory")
                continue
            pfd = openat2(self.dst, "/".join(done[:-1]), _DIR)
            try:
                os.mkdir(comp, 0o755, dir_fd=pfd)
                uid, gid = (self.owner.uid, self.owner.gid) if self.owner else (0, 0)
                os.chown(comp, uid, gid, dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)

    def is_dir(self, rel: str) -> bool:
        st = stat_in(self.dst, rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def entry(self, src_root: int, src_rel: str, st: os.stat_result, dst_rel: str,
              follow: bool = False) -> None:
        """Copy one entry (not its children) to dst_rel, replacing a non-directory there;
        follow is for a source named in the instruction, whose symlink Docker follows."""
        parent, _, name = dst_rel.rpartition("/")
        self.mkdirs(parent)
        pfd = openat2(self.dst, parent, _DIR)
        try:
            old = _lstat_at(pfd, name)
            if old is not None and not (stat.S_ISDIR(old.st_mode) and stat.S_ISDIR(st.st_mode)):
                if stat.S_ISDIR(old.st_mode):
                    raise CopyError(f"cannot overwrite directory /{dst_rel} with a non-directory")
                os.unlink(name, dir_fd=pfd)
            uid, gid = self._ids(st)
            mode = self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                if old is None:
                    os.mkdir(name, 0o700, dir_fd=pfd)
            elif stat.S_ISLNK(st.st_mode):
                sp, _, sn = src_rel.rpartition("/")
                sfd = openat2(src_root, sp, _DIR)
                try:
                    os.symlink(os.readlink(sn, dir_fd=sfd), name, dir_fd=pfd)
                finally:
                    os.close(sfd)
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
                return
            elif stat.S_ISREG(st.st_mode):
                src = openat2(src_root, src_rel,
                              os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
                try:
                    dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, 0o600, dir_fd=pfd)
                    try:
                        _copy_data(src, dst)
                    finally:
                        os.close(dst)
                finally:
                    os.close(src)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(
                    st.st_mode):
                os.mknod(name, st.st_mode, st.st_rdev, dir_fd=pfd)
            else:
                return  # sockets are not copied, as with Docker
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd,
                     follow_symlinks=False)
        finally:
            os.close(pfd)

    def tree(self, src_root: int, src_rel: str, dst_rel: str) -> None:
        """A directory's contents (not the directory itself) into dst_rel, as COPY does."""
        self.mkdirs(dst_rel)
        dirs: list[tuple[str, os.stat_result]] = []
        for rel, st in _walk(src_root, src_rel):
            sub = rel[len(src_rel):].lstrip("/") if src_rel else rel
            target = f"{dst_rel}/{sub}".strip("/") if sub else dst_rel
            if not sub:
                continue
            self.entry(src_root, rel, st, target)
            if stat.S_ISDIR(st.st_mode):
                dirs.append((target, st))
        for target, st in reversed(dirs):  # directory times last: their children touched them
            parent, _, name = target.rpartition("/")
            pfd = openat2(self.dst, parent, _DIR)
            try:
                os.chmod(name, self.chmod if self.chmod is not None
                         else stat.S_IMODE(st.st_mode), dir_fd=pfd)
                os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd)
            finally:
                os.close(pfd)


def _copy_data(src: int, dst: int) -> None:
    """copy_file_range where the kernel can (same filesystem); sendfile otherwise, as between
    an overlay and the ext4 beneath a staging dir (EXDEV)."""
    off = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30, off, off):
            off += n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while n := os.sendfile(dst, src, off, 1 << 30):
        off += n


def _lstat_at(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_archive(root: int, rel: str) -> bool:
    """ADD unpacks local tar archives (plain, gzip, bzip2, xz), as dockerd detects them."""
    fd = openat2(root, rel, os.O_RDONLY)
    try:
        with open(proc_fd_path(fd), "rb") as f:
            try:
                with tarfile.open(fileobj=f, mode="r:*") as tf:
                    return tf.next() is not None
            except (tarfile.TarError, EOFError, OSError):
                return False
    finally:
        os.close(fd)


def unpack_archive(src_root: int, src_rel: str, dst_root: int, dst_rel: str,
                   copier: Copier) -> None:
    """ADD of a local archive: its entries land under dst_rel, confined beneath it."""
    copier.mkdirs(dst_rel)
    sfd = openat2(src_root, src_rel, os.O_RDONLY)
    dfd = openat2(dst_root, dst_rel, _DIR)
    try:
        with open(proc_fd_path(sfd), "rb") as raw, decompressing(raw) as stream:
            apply_layer(stream, proc_fd_path(dfd), [])
    except UnpackError as e:
        raise CopyError(f"ADD {src_rel}: {e}") from None
    finally:
        os.close(sfd)
        os.close(dfd)


def copy_sources(src_root: int, sources: list[Source], dest: str, copier: Copier,
                 add_archives: bool = False) -> None:
    """Docker's rules: directories copy their contents; a trailing / or an existing directory
    makes dest a directory; several sources need a directory dest ending in /."""
    dst_rel = "/".join(_parts(dest))
    as_dir = dest.endswith("/") or copier.is_dir(dst_rel)
    if len(sources) > 1 and not dest.endswith("/"):
        raise CopyError("When using COPY with more than one source file, the destination "
                        "must be a directory and end with a /")
    for src in sources:
        if src.is_dir:
            copier.tree(src_root, src.rel, dst_rel)
            continue
        if add_archives and is_archive(src_root, src.rel):
            unpack_archive(src_root, src.rel, copier.dst, dst_rel, copier)
            continue
        name = src.rel.rsplit("/", 1)[-1]
        target = f"{dst_rel}/{name}".strip("/") if as_dir else dst_rel
        if not target:
            raise CopyError("cannot copy a file onto /")
        fd = openat2(src_root, src.rel, os.O_PATH)  # a named source symlink is followed
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        copier.entry(src_root, src.rel, st, target, follow=True)
