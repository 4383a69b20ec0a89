"""The entry-by-entry writer behind unpack: every path resolved beneath the snapshot root."""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from runtime.images._sys import openat2, proc_fd_path
from runtime.images.fsops import (
    lstat_at,
    process_umask,
    remove_at,
    set_xattr,
    write_all,
    xattrs,
)

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_MAX_LAYER_BYTES = 16 << 30
DEFAULT_MAX_ENTRIES = 1_000_000  # an inode bomb of empty files passes any byte cap
FSYNC_FILES = 64  # a layer with more files than this is flushed with one syncfs instead
_DIR = os.O_PATH | os.O_DIRECTORY
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
Body = Callable[[tarfile.TarInfo], Iterable[bytes | memoryview]]  # a regular member's content


class UnpackError(Exception):
    """A layer that is malformed, hostile or over its size cap."""


@dataclass
class UnpackResult:
    """What the unpack saw, so the caller can check the diff ID and account size."""

    diff_id: str
    tar_bytes: int
    file_bytes: int
    entries: int


@dataclass
class Link:
    """A hard link whose target lies in a lower layer: an empty placeholder until
    `lowerlinks.resolve_link` fills it."""

    rel: str
    ino: int
    target: list[str]


def clean_parts(name: str) -> list[str]:
    """Split a member name into safe components; '..' anywhere is refused, '/' is stripped."""
    parts = name.split("/")
    if "" in parts or "." in parts:  # a dir's trailing slash, "./" prefixes, doubled slashes
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"path {name!r} contains '..'")
    return parts


def _default_acl(fd: int) -> bool:
    """Whether the dir behind an O_PATH fd has a default ACL."""
    try:
        os.getxattr(proc_fd_path(fd), "system.posix_acl_default")
        return True
    except OSError:
        return False


def split(rel: str) -> tuple[list[str], str]:
    parts = rel.split("/")
    return parts[:-1], parts[-1]


@dataclass
class Applier:
    root: int
    lowers: list[int] | None  # None while detached: parents are not there yet
    cap: int
    file_bytes: int = 0
    dir_times: list[tuple[str, int]] = field(default_factory=list)
    implicit: dict[str, int] = field(default_factory=dict)  # parent dirs the tar never named
    links: list[Link] = field(default_factory=list)
    placeholders: dict[str, Link] = field(default_factory=dict)  # by target path
    written: list[int] = field(default_factory=list)  # fds of files to fsync before commit
    many_files: bool = False  # more than FSYNC_FILES: the commit flushes with syncfs instead
    umask: int = field(default_factory=process_umask)
    # the last regular file's parent: (parts, O_PATH fd, plain). Tars list a dir's files
    # together, so this saves an openat2 and a close per file; any entry but a regular file
    # drops it, since only those entries can remove or replace a directory.
    _parent: tuple[list[str], int, bool] | None = None

    def parent_fd(self, parts: list[str]) -> tuple[int, bool]:
        """Cached O_PATH fd of a regular file's parent dir, and whether a file created in it
        gets just root:root and its mode less the umask: not so under a setgid dir (its group)
        or a default ACL (which replaces the umask)."""
        cached = self._parent
        if cached is not None and cached[0] == parts:
            return cached[1], cached[2]
        self.drop_parent()
        fd = self.open_dir(parts, create=True)
        plain = not os.fstat(fd).st_mode & stat.S_ISGID and not _default_acl(fd)
        self._parent = (parts, fd, plain)
        return fd, plain

    def drop_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def open_dir(self, parts: list[str], create: bool) -> int:
        """O_PATH fd of a directory, resolved from the snapshot root; missing parents copy up."""
        try:
            return openat2(self.root, "/".join(parts), _DIR)
        except FileNotFoundError:
            if not create:
                raise
        except NotADirectoryError:
            raise UnpackError(f"{'/'.join(parts)!r} is not a directory") from None
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            try:
                os.close(openat2(self.root, prefix, _DIR))
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise UnpackError(f"{prefix!r} is not a directory") from None
            pfd = openat2(self.root, "/".join(parts[:i]), _DIR)
            try:
                self._mkparent(pfd, parts[i], prefix)
            finally:
                os.close(pfd)
        return openat2(self.root, "/".join(parts), _DIR)

    def _mkparent(self, pfd: int, comp: str, rel: str) -> None:
        try:
            os.mkdir(comp, 0o755, dir_fd=pfd)
        except FileExistsError:
            raise UnpackError(f"parent {rel!r} is a dangling symlink") from None
        fd = openat2(pfd, comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o755)
            if self.lowers is None:
                self.implicit[rel] = os.fstat(fd).st_ino
            else:
                self._lower_dir_meta(fd, rel)
        finally:
            os.close(fd)

    def _lower_dir_meta(self, fd: int, rel: str) -> None:
        """A parent dir the layer omits keeps the owner, mode and mtime it has below."""
        st = self._lower_stat(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            self.dir_times.append((rel, st.st_mtime_ns))

    def _lower_stat(self, rel: str) -> os.stat_result | None:
        for lfd in self.lowers or []:
            try:
                fd = openat2(lfd, rel, os.O_PATH | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        return None

    def clear(self, pfd: int, base: str, rel: str, keep_dir: bool) -> None:
        """Remove whatever the name holds now, never following a symlink."""
        st = lstat_at(pfd, base)
        if st is None:
            return
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return
        remove_at(pfd, base, st)
        self._forget(rel)

    def _forget(self, rel: str) -> None:
        """Records of what was at or under rel no longer apply: it is gone."""
        under = rel + "/"
        for k in [k for k in self.implicit if k == rel or k.startswith(under)]:
            del self.implicit[k]
        self.links = [x for x in self.links if x.rel != rel and not x.rel.startswith(under)]

    def apply(self, m: tarfile.TarInfo, body: Body) -> None:
        parts = clean_parts(m.name)
        if parts and m.isreg() and not parts[-1].startswith(WHITEOUT_PREFIX):
            self._file(*self.parent_fd(parts[:-1]), parts, m, body)
            return
        self.drop_parent()
        if not parts:
            if m.isdir():
                fd = openat2(self.root, ".", os.O_RDONLY | os.O_DIRECTORY)
                self._meta_fd(fd, m, "")
            return
        base = parts[-1]
        pfd = self.open_dir(parts[:-1], create=True)
        try:
            if base == OPAQUE:
                os.setxattr(proc_fd_path(pfd), "trusted.overlay.opaque", b"y")
            elif base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX) :]
                if target.startswith(WHITEOUT_PREFIX):
                    return  # other AUFS metadata (.wh..wh.plnk etc.): meaningless for overlay
                if target in ("", ".", ".."):
                    raise UnpackError(f"whiteout {m.name!r} names no entry")
                if lstat_at(pfd, target) is not None:
                    return  # a whiteout only hides lower layers, never its own layer's entry
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            else:
                self._entry(pfd, base, parts, m, body)
        finally:
            os.close(pfd)

    def _entry(self, pfd: int, base: str, parts: list[str], m: tarfile.TarInfo, body: Body
               ) -> None:
        rel = "/".join(parts)
        self.clear(pfd, base, rel, keep_dir=m.isdir())
        if m.isdir():
            self.implicit.pop(rel, None)  # named now: its own metadata wins
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = openat2(pfd, base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            self._meta_fd(fd, m, rel)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._meta_nofollow(pfd, base, m)
        elif m.islnk():
            self._hardlink(pfd, base, rel, m)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            self._meta_nofollow(pfd, base, m)
        else:
            raise UnpackError(f"{rel!r}: unsupported tar entry type {m.type!r}")

    def _file(self, pfd: int, plain_parent: bool, parts: list[str], m: tarfile.TarInfo,
              body: Body) -> None:
        """A regular file, in as few syscalls as it allows: created with its final mode when
        the umask and no special bits are in the way, chowned only when not root's (or the
        parent is not plain), and over an existing entry only when the create says one is
        there."""
        base = parts[-1]
        if self.file_bytes + m.size > self.cap:
            raise UnpackError(f"{'/'.join(parts)!r} ({m.size} bytes) exceeds the layer size "
                              f"cap {self.cap}")
        self.file_bytes += m.size
        mode = m.mode & 0o7777
        direct = plain_parent and not mode & (0o7000 | self.umask)
        try:
            fd = os.open(base, _NEW, mode if direct else 0o600, dir_fd=pfd)
        except FileExistsError:
            self.clear(pfd, base, "/".join(parts), keep_dir=False)
            fd = os.open(base, _NEW, mode if direct else 0o600, dir_fd=pfd)
        try:
            write_all(body(m), fd, not self.many_files and len(self.written) < FSYNC_FILES)
            if m.size and not self.many_files:
                if len(self.written) < FSYNC_FILES:
                    self.written.append(os.dup(fd))
                else:
                    self.many_files = True
                    self.close()
            if not direct or m.uid or m.gid:
                os.fchown(fd, m.uid, m.gid)
            if not direct:
                os.fchmod(fd, mode)  # after the chown, which clears setuid
            if m.pax_headers:  # xattrs come only in PAX headers: most files have none
                for k, v in xattrs(m):
                    set_xattr(fd, None, k, v)
            ns = int(m.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def own(self, tparts: list[str]) -> tuple[int, os.stat_result | None]:
        """Dir fd of the target's parent (or -1) and the target's lstat, in this layer only."""
        try:
            tpfd = self.open_dir(tparts[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            return -1, None
        return tpfd, lstat_at(tpfd, tparts[-1])

    def _hardlink(self, pfd: int, base: str, rel: str, m: tarfile.TarInfo) -> None:
        tparts = clean_parts(m.linkname)
        if not tparts:
            raise UnpackError(f"hardlink {m.name!r} to the root")
        tpfd, st = self.own(tparts)
        try:
            if st is None:  # in a lower layer, or nowhere: resolve will tell
                self._defer_link(pfd, base, rel, "/".join(tparts), tparts)
                return
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"hardlink {m.name!r} to a directory")
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            if tpfd >= 0:
                os.close(tpfd)

    def _defer_link(self, pfd: int, base: str, rel: str, target: str, tparts: list[str]) -> None:
        """Links to one lower file share one placeholder, so they stay one inode."""
        ph = self.placeholders.get(target)
        if ph is not None and ph in self.links:
            hpdir, hbase = split(ph.rel)
            hpfd = self.open_dir(hpdir, create=False)
            try:
                st = lstat_at(hpfd, hbase)
                if st is not None and st.st_ino == ph.ino:
                    os.link(hbase, base, src_dir_fd=hpfd, dst_dir_fd=pfd, follow_symlinks=False)
                    return
            finally:
                os.close(hpfd)
        fd = os.open(base, _NEW, 0o000, dir_fd=pfd)
        try:
            link = Link(rel, os.fstat(fd).st_ino, tparts)
        finally:
            os.close(fd)
        self.links.append(link)
        self.placeholders[target] = link

    def resolve_implicit(self, rel: str, ino: int) -> None:
        """Give a parent dir the tar omitted the metadata it has in the lower layers."""
        try:
            fd = openat2(self.root, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            if os.fstat(fd).st_ino == ino:
                self._lower_dir_meta(fd, rel)
        finally:
            os.close(fd)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, dir_rel: str | None) -> None:
        """Owner, then mode and xattrs (chown clears setuid and capabilities), then mtime."""
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, stat.S_IMODE(m.mode))
            for k, v in xattrs(m):
                set_xattr(fd, None, k, v)
            ns = int(m.mtime * 1e9)
            if dir_rel is None:
                os.utime(fd, ns=(ns, ns))
            else:
                self.dir_times.append((dir_rel, ns))
        finally:
            os.close(fd)

    def _meta_nofollow(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not m.issym():
            # fchmodat has no NOFOLLOW; the node was just created by mknod, so no symlink is here
            os.chmod(base, stat.S_IMODE(m.mode), dir_fd=pfd)
        for k, v in xattrs(m):
            set_xattr(pfd, base, k, v)
        ns = int(m.mtime * 1e9)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def flush(self) -> bool:
        """fsync the files this layer wrote; False when there were too many (syncfs then)."""
        try:
            for fd in self.written:
                os.fsync(fd)
        finally:
            self.close()
        return not self.many_files

    def close(self) -> None:
        """Let go of the fds kept for flush() (and of the cached parent dir)."""
        self.drop_parent()
        fds, self.written = self.written, []
        for fd in fds:
            os.close(fd)

    def finish(self) -> None:
        """Directory mtimes last, since writing their children changed them."""
        for rel, ns in reversed(self.dir_times):
            try:
                fd = openat2(self.root, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


