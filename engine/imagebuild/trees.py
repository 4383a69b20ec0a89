"""Where COPY reads from: a directory confined beneath its root, or the context tar itself.

Both kinds answer the same few questions (what is at a path, what a directory holds, a link's
target, a file's bytes and their digest), so the copy rules, the cache digest and the write are
one code path whichever the source is. The tar kind is why a build need not unpack its context:
a plain tar context is read once for its headers (each vetted as an unpack would), a COPY's
digest hashes just the files it names straight from the tar, and on a cache miss their bytes go
from the tar into the step's rootfs in the kernel (copy_file_range/sendfile at the entry's
offset). It answers only for contexts whose paths resolve as plain strings: one with a symlink,
a hard link, a sparse file or a duplicate name is unpacked instead (`context.extract`) and read
as a directory, where openat2 does the resolving. A dir the tar does not name is made up as the
unpack makes it (0755, root's).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runtime.images._sys import openat2

_DIR = os.O_RDONLY | os.O_DIRECTORY


@dataclass(frozen=True)
class Meta:
    """What the copy and the digest need of an entry: an lstat, whichever tree it comes from."""

    mode: int  # st_mode, type bits included
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    rdev: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> Meta:
        return cls(st.st_mode, st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns, st.st_rdev)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class Tree(Protocol):
    """A source of COPY: every path is relative to its root and never resolves outside it."""

    def stat(self, rel: str, follow: bool = True) -> Meta | None: ...

    def entries(self, rel: str) -> list[tuple[str, Meta]]: ...  # sorted, lstat'd

    def readlink(self, rel: str) -> str: ...

    def file_digest(self, rel: str) -> str: ...

    def copy_to(self, rel: str, dst: int, follow: bool) -> None: ...

    def read(self, rel: str, cap: int) -> bytes: ...


def _copy(src: int, dst: int, off: int, length: int | None) -> None:
    """src's bytes from off (length of them, or to its end) into dst at 0: copy_file_range
    where the kernel can (same filesystem), sendfile otherwise, as between the state dir's ext4
    and a step's overlay (EXDEV)."""
    done = 0
    want = (1 << 30) if length is None else length
    try:
        while done < want and (n := os.copy_file_range(src, dst, want - done, off + done, done)):
            done += n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while done < want and (n := os.sendfile(dst, src, off + done, want - done)):
        done += n


class DirTree:
    """A directory (an unpacked context, a staging dir, a stage's rootfs), read beneath its
    root fd with openat2(RESOLVE_IN_ROOT): a symlink resolves as it would inside it."""

    def __init__(self, root: int) -> None:
        self.fd = root

    def stat(self, rel: str, follow: bool = True) -> Meta | None:
        try:
            if not follow:
                parent, _, name = rel.rpartition("/")
                pfd = openat2(self.fd, parent, _DIR)
                try:
                    return Meta.of(os.stat(name, dir_fd=pfd, follow_symlinks=False))
                finally:
                    os.close(pfd)
            fd = openat2(self.fd, rel, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return Meta.of(os.fstat(fd))
        finally:
            os.close(fd)

    def entries(self, rel: str) -> list[tuple[str, Meta]]:
        fd = openat2(self.fd, rel, _DIR)
        try:
            return [(n, Meta.of(os.stat(n, dir_fd=fd, follow_symlinks=False)))
                    for n in sorted(os.listdir(fd))]
        finally:
            os.close(fd)

    def readlink(self, rel: str) -> str:
        parent, _, name = rel.rpartition("/")
        pfd = openat2(self.fd, parent, _DIR)
        try:
            return os.readlink(name, dir_fd=pfd)
        finally:
            os.close(pfd)

    def file_digest(self, rel: str) -> str:
        fd = openat2(self.fd, rel, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
            return h.hexdigest()
        finally:
            os.close(fd)

    def copy_to(self, rel: str, dst: int, follow: bool) -> None:
        src = openat2(self.fd, rel, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
        try:
            _copy(src, dst, 0, None)
        finally:
            os.close(src)

    def read(self, rel: str, cap: int) -> bytes:
        fd = openat2(self.fd, rel, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read(cap)


@dataclass
class _Entry:
    """An indexed path: its header's metadata, its data's place in the tar, or its names."""

    meta: Meta
    offset: int = 0
    size: int = 0
    children: list[str] = field(default_factory=list)


class TarTree:
    """The context tar's index: paths to headers and data offsets, nothing unpacked."""

    def __init__(self, entries: dict[str, _Entry], digests: dict[str, str]) -> None:
        self.fd = -1  # the tar, opened for reading by whoever indexed it
        self.paths = entries
        self._digests = digests  # path -> sha256 of its bytes, as far as known

    @classmethod
    def index(cls, members: Iterable[tarfile.TarInfo], end: int,
              digests: dict[str, str] | None = None) -> TarTree | None:
        """The tree of a tar's members (vetted by the caller; end is the tar's size, digests
        what was hashed on the way), or None when some path would need more than string
        lookups to resolve (see above)."""
        now = time.time_ns()
        entries: dict[str, _Entry] = {"": _Entry(Meta(stat.S_IFDIR | 0o755, 0, 0, now, now))}
        implicit: set[str] = set()  # dirs the tar has not named (yet): made 0755 as on unpack
        for m in members:
            rel = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            if not rel:
                continue  # the context root's own entry: its metadata is never copied
            if not (m.isreg() or m.isdir()) or m.sparse is not None:
                return None
            if m.offset_data + m.size > end:
                return None  # truncated: the unpack says so in its words
            ns = int(m.mtime * 1e9)
            kind = stat.S_IFDIR if m.isdir() else stat.S_IFREG
            meta = Meta(kind | stat.S_IMODE(m.mode), m.uid, m.gid, ns, ns)
            if rel in entries:
                if rel not in implicit or not m.isdir():
                    return None
                implicit.discard(rel)
                entries[rel].meta = meta
                continue
            parent, _, name = rel.rpartition("/")
            if not cls._parents(entries, implicit, parent, now):
                return None
            entries[rel] = _Entry(meta, m.offset_data, m.size)
            entries[parent].children.append(name)
        for e in entries.values():
            e.children.sort()
        return cls(entries, digests if digests is not None else {})

    @staticmethod
    def _parents(entries: dict[str, _Entry], implicit: set[str], rel: str, now: int) -> bool:
        """rel and its parents as dirs, made up (0755, root's, now) where the tar is silent;
        False when one of them is a file."""
        missing: list[str] = []
        while rel not in entries:
            missing.append(rel)
            rel = rel.rpartition("/")[0]
        if not entries[rel].meta.is_dir:
            return False
        for path in reversed(missing):
            parent, _, name = path.rpartition("/")
            entries[path] = _Entry(Meta(stat.S_IFDIR | 0o755, 0, 0, now, now))
            entries[parent].children.append(name)
            implicit.add(path)
        return True

    def _key(self, rel: str) -> str | None:
        """rel resolved as openat2(RESOLVE_IN_ROOT) would in a tree without symlinks: `..`
        goes up a level (from a dir that exists) and stops at the root."""
        parts: list[str] = []
        for p in rel.split("/"):
            if p == "..":
                here = self.paths.get("/".join(parts))
                if here is None or not here.meta.is_dir:
                    return None
                if parts:
                    parts.pop()
            elif p not in ("", "."):
                parts.append(p)
        return "/".join(parts)

    def _get(self, rel: str) -> _Entry | None:
        key = self._key(rel)
        return None if key is None else self.paths.get(key)

    def stat(self, rel: str, follow: bool = True) -> Meta | None:
        e = self._get(rel)
        return None if e is None else e.meta

    def entries(self, rel: str) -> list[tuple[str, Meta]]:
        e = self._get(rel)
        if e is None or not e.meta.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", rel)
        key = self._key(rel) or ""
        base = f"{key}/" if key else ""
        return [(n, self.paths[base + n].meta) for n in e.children]

    def readlink(self, rel: str) -> str:
        raise OSError(errno.EINVAL, "not a symlink", rel)  # the index holds none

    def _file(self, rel: str) -> _Entry:
        e = self._get(rel)
        if e is None or not stat.S_ISREG(e.meta.mode):
            raise FileNotFoundError(errno.ENOENT, "no such file in the context", rel)
        return e

    def file_digest(self, rel: str) -> str:
        if rel not in self._digests:
            e = self._file(rel)
            h = hashlib.sha256()
            off, end = e.offset, e.offset + e.size
            while off < end and (chunk := os.pread(self.fd, min(1 << 20, end - off), off)):
                h.update(chunk)
                off += len(chunk)
            self._digests[rel] = h.hexdigest()
        return self._digests[rel]

    def copy_to(self, rel: str, dst: int, follow: bool) -> None:
        e = self._file(rel)
        _copy(self.fd, dst, e.offset, e.size)

    def read(self, rel: str, cap: int) -> bytes:
        e = self._file(rel)
        return os.pread(self.fd, min(cap, e.size), e.offset)


def walk(tree: Tree, rel: str) -> Iterator[tuple[str, Meta]]:
    """rel (a named source: a symlink there is followed) and everything under it, parents
    first, names sorted; symlinks below rel are not followed."""
    meta = tree.stat(rel)
    if meta is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", rel)
    yield rel, meta
    if not meta.is_dir:
        return
    for name, cm in tree.entries(rel):
        child = f"{rel}/{name}" if rel else name
        if cm.is_dir:
            yield from walk(tree, child)
        else:
            yield child, cm


def open_root(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
