"""The build context: an untrusted tar, checked entry by entry, read in place or unpacked.

A context is treated like an image layer from a stranger. Every header is checked before
anything is done with it: absolute names, `..`, device nodes, FIFOs, `.wh.` names and hard links
that leave the context are refused with a message naming the entry. A plain tar is first only
indexed (`index`: headers and data offsets, see `trees.TarTree`), so an all-cached build writes
none of it; what the index cannot answer is unpacked (`extract`) by the image unpacker
(`runtime.images.unpack.apply_layer`), which resolves every path beneath the context root with
openat2(RESOLVE_IN_ROOT), so even a symlink the context plants cannot point a later write
outside it.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import os
import queue
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.imagebuild.trees import TarTree
from runtime.images.unpack import WHITEOUT_PREFIX, UnpackError, apply_layer

MAX_CONTEXT_BYTES = 8 << 30
MAX_CONTEXT_ENTRIES = 500_000
USTAR = b"ustar"  # at offset 257 of a ustar, pax or GNU tar's first header
BLOCK = 512


class ContextError(ValueError):
    """The build context cannot be used; the message names the entry and why."""


def _check_name(name: str, what: str) -> None:
    if name.startswith("/"):
        raise ContextError(f"build context {what} {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ContextError(f"build context {what} {name!r} points outside the context ('..')")
    if any(p.startswith(WHITEOUT_PREFIX) for p in parts):
        raise ContextError(f"build context {what} {name!r} uses the reserved prefix "
                           f"{WHITEOUT_PREFIX!r}")


def vet(m: tarfile.TarInfo) -> None:
    """One header of the context, refused before it is applied if it is hostile."""
    _check_name(m.name, "entry")
    if m.ischr() or m.isblk():
        raise ContextError(f"build context entry {m.name!r} is a device node; "
                           "device nodes are not allowed in a build context")
    if m.isfifo():
        raise ContextError(f"build context entry {m.name!r} is a FIFO")
    if m.islnk():
        _check_name(m.linkname, "hard link target")
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise ContextError(f"build context entry {m.name!r} has unsupported type {m.type!r}")


@contextlib.contextmanager
def decompressing(raw: IO[bytes]) -> Iterator[IO[bytes]]:
    """bzip2 and xz are unwrapped here; plain and gzip pass as they are (the unpacker reads
    gzip itself). raw must be seekable."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"BZh"):
        with bz2.open(raw, "rb") as src:
            yield src
    elif head.startswith(b"\xfd7zXZ\x00"):
        with lzma.open(raw, "rb") as src:
            yield src
    else:
        yield raw


def extract(path: Path, dest: Path) -> None:
    """Unpack the context tar at path into the empty dir dest, every header vetted first
    (blocking). One pass: a refused entry stops the unpack, and the caller drops dest."""
    dest.mkdir(parents=True, exist_ok=True)
    if path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as raw, decompressing(raw) as src:
            apply_layer(src, str(dest), [], max_bytes=MAX_CONTEXT_BYTES,
                        max_entries=MAX_CONTEXT_ENTRIES, vet=vet)
    except UnpackError as e:
        raise ContextError(f"build context: {str(e).replace('layer', 'archive')}") from None
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise ContextError(f"build context is not a valid tar archive: {e}") from None


def _vetted(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for n, m in enumerate(tf, 1):
        if n > MAX_CONTEXT_ENTRIES:
            raise ContextError(f"build context has more than the cap of {MAX_CONTEXT_ENTRIES} "
                               "entries")
        vet(m)
        yield m


def _rel(m: tarfile.TarInfo) -> str:
    return "/".join(p for p in m.name.split("/") if p not in ("", "."))


def index(path: Path) -> TarTree | None:
    """The context tar at path read for its headers only, each vetted (blocking): a tree that
    reads files out of the tar, or None when the context is not a plain (ustar/pax/GNU) tar or
    needs the unpack to resolve its paths (the caller then extracts)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        tree = None
        if os.pread(fd, 5, 257) == USTAR:
            with os.fdopen(os.dup(fd), "rb") as f, \
                    tarfile.open(fileobj=f, mode="r:") as tf:  # type: ignore[call-overload]
                tree = TarTree.index(_vetted(tf), size)
    except tarfile.TarError as e:
        os.close(fd)
        raise ContextError(f"build context is not a valid tar archive: {e}") from None
    except BaseException:
        os.close(fd)
        raise
    if tree is None:
        os.close(fd)
    else:
        tree.fd = fd
    return tree


@dataclass
class Spooled:
    """A context as it arrived: its file, and what reading it on the way in found."""

    path: Path
    tree: TarTree | None = None  # indexed and hashed in place; None: index the file later
    error: ContextError | None = None  # a hostile entry seen on the way in

    def close(self) -> None:
        """The tree's fd, once the build is over (the build itself leaves it open)."""
        if self.tree is not None and self.tree.fd >= 0:
            os.close(self.tree.fd)
            self.tree.fd = -1


class _Chunks:
    """File-like over a queue of chunks (None ends it), for tarfile's stream mode."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self.chunks, self.buf, self.eof = chunks, bytearray(), False

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) < n):
            chunk = self.chunks.get()
            if chunk is None:
                self.eof = True
            else:
                self.buf += chunk
        n = len(self.buf) if n < 0 else min(n, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def unread(self, data: bytes) -> None:
        self.buf[:0] = data

    def drain(self) -> None:
        while not self.eof:
            self.eof = self.chunks.get() is None


class Spool:
    """The context tar as it arrives: written to its file, and read in the same pass by a
    thread through tarfile's stream mode, which vets every header and hashes every regular
    file's bytes as they go by. When the upload ends the index a build needs is done, digests
    included, and nothing is read twice; that thread works while the client is still sending.
    A context that is not a plain tar, or that the index gives up on, is just written: the
    build then indexes or unpacks the file as before."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.tree: TarTree | None = None
        self.error: ContextError | None = None
        self.reader = threading.Thread(target=self._read, name="context-index", daemon=True)
        self.reader.start()

    def write(self, chunk: bytes) -> None:
        """Append a chunk (blocking: the file write, and the reader's pace past 16 chunks)."""
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]
        self.chunks.put(chunk)

    def finish(self) -> Spooled:
        """The upload is complete (or abandoned): wait for the reader (blocking)."""
        self._stop()
        if self.tree is not None:
            self.tree.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return Spooled(self.path, self.tree, self.error)

    def _stop(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.chunks.put(None)
        self.reader.join()

    def close(self) -> None:
        """Let go of everything, finished or not (blocking)."""
        self._stop()

    def _read(self) -> None:
        src = _Chunks(self.chunks)
        try:
            head = src.read(BLOCK)
            src.unread(head)
            if head[257:262] != USTAR:
                return
            digests: dict[str, str] = {}
            with tarfile.open(fileobj=src, mode="r|",  # type: ignore[call-overload]
                              bufsize=1 << 20) as tf:

                def hashed() -> Iterator[tarfile.TarInfo]:
                    for m in _vetted(tf):
                        if m.isreg() and m.sparse is None:
                            f = tf.extractfile(m)
                            assert f is not None
                            h = hashlib.sha256()
                            while chunk := f.read(1 << 20):
                                h.update(chunk)
                            digests[_rel(m)] = h.hexdigest()
                        yield m

                self.tree = TarTree.index(hashed(), sys.maxsize, digests)
        except ContextError as e:
            self.error = e
        except (tarfile.TarError, EOFError, OSError):
            self.tree = None  # the build reads the file and says what is wrong with it
        finally:
            src.drain()
