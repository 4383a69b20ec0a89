"""COPY and ADD: Docker's copy rules, with both ends resolved beneath their own roots.

Sources are read from a `trees.Tree`: the context tar's index, or a directory (the unpacked
context, a `--from` staging dir) read with openat2(RESOLVE_IN_ROOT); destinations are resolved
beneath the step's rootfs the same way: a symlink in the context or in the image resolves as it
would inside the container, never onto a host path. The digest of what
a step copies (paths, modes, link targets and contents) is its cache key's part, computed before
anything is written so an unchanged COPY is a cache hit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.imagebuild.context import decompressing
from engine.imagebuild.trees import DirTree, Meta, Tree, walk
from runtime.images._sys import openat2, proc_fd_path
from runtime.images.unpack import UnpackError, apply_layer

_DIR = os.O_RDONLY | os.O_DIRECTORY
_WILD = set("*?[")
COPY_THREADS = min(4, os.cpu_count() or 1)  # threads copying or hashing a tree


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


def stat_in(root: int, rel: str) -> os.stat_result | None:
    try:
        fd = openat2(root, rel, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def expand_sources(tree: Tree, patterns: list[str]) -> list[Source]:
    """Each pattern's matches, wildcards allowed in any component (filepath.Match syntax)."""
    out: list[Source] = []
    for pat in patterns:
        parts = _parts(pat)
        found = [""]
        for comp in parts:
            nxt: list[str] = []
            for base in found:
                if _WILD & set(comp):
                    meta = tree.stat(base)
                    if meta is None or not meta.is_dir:
                        continue
                    nxt += [f"{base}/{n}".lstrip("/") for n, _ in tree.entries(base)
                            if fnmatch.fnmatchcase(n, comp)]
                else:
                    nxt.append(f"{base}/{comp}".lstrip("/"))
            found = nxt
        hits = [(rel, meta) for rel in found if (meta := tree.stat(rel)) is not None]
        if not hits:
            raise CopyError(f"file not found in build context or excluded by .dockerignore: "
                            f"stat {pat}: file does not exist")
        out += [Source(rel, meta.is_dir) for rel, meta in hits]
    return out


def digest_sources(tree: Tree, sources: list[Source]) -> str:
    """What the copied tree holds, for the cache key: paths, modes, owners, link targets and
    each file's sha256 (mtimes left out, as dockerd does; a source dir's own metadata too,
    since COPY copies only what it holds). Files are hashed by COPY_THREADS threads (read
    and sha256 let go of the GIL), then fed in walk order."""
    entries = [(src, rel, meta) for src in sources for rel, meta in walk(tree, src.rel)]
    files = [rel for _src, rel, meta in entries if stat.S_ISREG(meta.mode)]
    with ThreadPoolExecutor(COPY_THREADS) as pool:
        sums = dict(zip(files, pool.map(tree.file_digest, files), strict=True))
    h = hashlib.sha256()
    for src, rel, meta in entries:
        if rel == src.rel and meta.is_dir:
            h.update(f"{rel}\0dir\0".encode())
            continue
        h.update(f"{rel}\0{meta.mode:o}\0{meta.uid}:{meta.gid}\0".encode())
        if stat.S_ISLNK(meta.mode):
            h.update(tree.readlink(rel).encode())
        elif stat.S_ISREG(meta.mode):
            h.update(sums[rel].encode())
    return "sha256:" + h.hexdigest()


class Copier:
    """Writes into a rootfs (the step's mounted overlay) beneath its root fd."""

    def __init__(self, dst_root: int, owner: Owner | None, chmod: int | None,
                 keep_owner: bool) -> None:
        self.dst, self.owner, self.chmod, self.keep_owner = dst_root, owner, chmod, keep_owner

    def _ids(self, meta: Meta) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        return (meta.uid, meta.gid) if self.keep_owner else (0, 0)

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

    def entry(self, src: Tree, src_rel: str, meta: Meta, dst_rel: str,
              follow: bool = False) -> None:
        """Copy one entry (not its children) to dst_rel, replacing a non-directory there;
        follow is for a source named in the instruction, whose symlink Docker follows."""
        parent, _, name = dst_rel.rpartition("/")
        self.mkdirs(parent)
        pfd = openat2(self.dst, parent, _DIR)
        try:
            self._entry_at(pfd, name, dst_rel, src, src_rel, meta, follow)
        finally:
            os.close(pfd)

    def _entry_at(self, pfd: int, name: str, dst_rel: str, src: Tree, src_rel: str,
                  meta: Meta, follow: bool) -> None:
        """entry() once dst_rel's parent dir is open as pfd. A regular file is created first
        and what was there looked at only when the create says something is."""
        uid, gid = self._ids(meta)
        mode = self.chmod if self.chmod is not None else stat.S_IMODE(meta.mode)
        times = (meta.atime_ns, meta.mtime_ns)
        if stat.S_ISREG(meta.mode):  # the common case, on the new file's own fd
            new = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                dst = os.open(name, new, 0o600, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, name, dst_rel, meta)
                dst = os.open(name, new, 0o600, dir_fd=pfd)
            try:
                src.copy_to(src_rel, dst, follow)
                os.fchown(dst, uid, gid)
                os.fchmod(dst, mode)  # after the chown, which clears setuid
                os.utime(dst, ns=times)
            finally:
                os.close(dst)
            return
        old = self._clear(pfd, name, dst_rel, meta)
        if meta.is_dir:
            if old is None:
                os.mkdir(name, 0o700, dir_fd=pfd)
        elif stat.S_ISLNK(meta.mode):
            os.symlink(src.readlink(src_rel), name, dir_fd=pfd)
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
            return
        elif stat.S_ISCHR(meta.mode) or stat.S_ISBLK(meta.mode) or stat.S_ISFIFO(meta.mode):
            os.mknod(name, meta.mode, meta.rdev, dir_fd=pfd)
        else:
            return  # sockets are not copied, as with Docker
        os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(name, mode, dir_fd=pfd, follow_symlinks=False)
        os.utime(name, ns=times, dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _clear(pfd: int, name: str, dst_rel: str, meta: Meta) -> os.stat_result | None:
        """Make room for meta at name: what is there goes unless both are dirs (a dir is never
        replaced by a non-dir). Returns what stays."""
        old = _lstat_at(pfd, name)
        if old is not None and not (stat.S_ISDIR(old.st_mode) and meta.is_dir):
            if stat.S_ISDIR(old.st_mode):
                raise CopyError(f"cannot overwrite directory /{dst_rel} with a non-directory")
            os.unlink(name, dir_fd=pfd)
            return None
        return old

    def tree(self, src: Tree, src_rel: str, dst_rel: str) -> None:
        """A directory's contents (not the directory itself) into dst_rel, as COPY does.
        Its top level is copied first; the trees under its subdirs are then copied by
        COPY_THREADS threads (the copy is syscalls, which let go of the GIL)."""
        self.mkdirs(dst_rel)
        top = openat2(self.dst, dst_rel, _DIR)
        subdirs: list[tuple[str, str, int, Meta]] = []
        try:
            for name, meta in src.entries(src_rel):
                rel = f"{src_rel}/{name}" if src_rel else name
                target = f"{dst_rel}/{name}".strip("/")
                self._entry_at(top, name, target, src, rel, meta, False)
                if meta.is_dir:
                    subdirs.append((rel, target, openat2(top, name, _DIR | os.O_NOFOLLOW), meta))
            with ThreadPoolExecutor(COPY_THREADS) as pool:
                jobs = [pool.submit(self._contents, src, rel, target, fd)
                        for rel, target, fd, _meta in subdirs]
                for job in jobs:
                    job.result()
            for _rel, _target, fd, meta in subdirs:
                self._restamp(fd, meta)
        finally:
            for _rel, _target, fd, _meta in subdirs:
                os.close(fd)
            os.close(top)

    def _contents(self, src: Tree, src_rel: str, dst_rel: str, dst_fd: int) -> None:
        """src_rel's contents into the open dir dst_fd (dst_rel). The dirs on the way down
        stay open (walk goes parents first, depth first), so a file costs no path lookup
        beyond its own name; a dir's mode and times are set again when the walk leaves it,
        since writing its children changed them."""
        stack: list[tuple[str, int, Meta]] = []
        try:
            for rel, meta in walk(src, src_rel):
                sub = rel[len(src_rel):].lstrip("/")
                if not sub:
                    continue
                target = f"{dst_rel}/{sub}"
                parent, _, name = target.rpartition("/")
                while stack and stack[-1][0] != parent:
                    _path, fd, done = stack.pop()
                    try:
                        self._restamp(fd, done)
                    finally:
                        os.close(fd)
                pfd = stack[-1][1] if stack else dst_fd  # walk's order makes it the parent
                self._entry_at(pfd, name, target, src, rel, meta, False)
                if meta.is_dir:
                    stack.append((target, openat2(pfd, name, _DIR | os.O_NOFOLLOW), meta))
            for _path, fd, done in reversed(stack):
                self._restamp(fd, done)
        finally:
            for _path, fd, _meta in stack:
                os.close(fd)

    def _restamp(self, fd: int, meta: Meta) -> None:
        """A copied dir is complete: its mode and times once more."""
        os.fchmod(fd, self.chmod if self.chmod is not None else stat.S_IMODE(meta.mode))
        os.utime(fd, ns=(meta.atime_ns, meta.mtime_ns))


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


def copy_sources(src: Tree, sources: list[Source], dest: str, copier: Copier,
                 add_archives: bool = False) -> None:
    """Docker's rules: directories copy their contents; a trailing / or an existing directory
    makes dest a directory; several sources need a directory dest ending in /. add_archives
    (ADD from the unpacked context) unpacks local archives instead."""
    dst_rel = "/".join(_parts(dest))
    as_dir = dest.endswith("/") or copier.is_dir(dst_rel)
    if len(sources) > 1 and not dest.endswith("/"):
        raise CopyError("When using COPY with more than one source file, the destination "
                        "must be a directory and end with a /")
    for s in sources:
        if s.is_dir:
            copier.tree(src, s.rel, dst_rel)
            continue
        if add_archives and isinstance(src, DirTree) and is_archive(src.fd, s.rel):
            unpack_archive(src.fd, s.rel, copier.dst, dst_rel, copier)
            continue
        name = s.rel.rsplit("/", 1)[-1]
        target = f"{dst_rel}/{name}".strip("/") if as_dir else dst_rel
        if not target:
            raise CopyError("cannot copy a file onto /")
        meta = src.stat(s.rel)  # a named source symlink is followed
        if meta is None:
            raise CopyError(f"{s.rel}: file does not exist")
        copier.entry(src, s.rel, meta, target, follow=True)
