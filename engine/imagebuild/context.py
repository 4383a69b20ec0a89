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
import lzma
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from engine.imagebuild.trees import TarTree
from runtime.images.unpack import WHITEOUT_PREFIX, UnpackError, apply_layer

MAX_CONTEXT_BYTES = 8 << 30
MAX_CONTEXT_ENTRIES = 500_000


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


def index(path: Path) -> TarTree | None:
    """The context tar at path read for its headers only, each vetted (blocking): a tree that
    reads files out of the tar, or None when the context is not a plain (ustar/pax/GNU) tar or
    needs the unpack to resolve its paths (the caller then extracts)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if os.pread(fd, 5, 257) != b"ustar":
            os.close(fd)
            return None
        with os.fdopen(os.dup(fd), "rb") as f, \
                tarfile.open(fileobj=f, mode="r:") as tf:  # type: ignore[call-overload]
            tree = TarTree.index(_vetted(tf), fd, size)
    except tarfile.TarError as e:
        os.close(fd)
        raise ContextError(f"build context is not a valid tar archive: {e}") from None
    except BaseException:
        os.close(fd)
        raise
    if tree is None:
        os.close(fd)
    return tree
