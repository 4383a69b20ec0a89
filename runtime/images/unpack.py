"""Apply one layer tar into a snapshot dir without ever opening a host path outside it.

A layer unpacks in two steps so that layers of one image can unpack at the same time:
`unpack_detached` needs only the layer's own bytes and its own directory; what depends on the
parent layers (metadata of parent dirs the tar omits, hard links to files of lower layers) is
recorded and done by `Detached.resolve` once the parents are committed.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zstandard

from runtime.images.applier import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_LAYER_BYTES,
    OPAQUE,
    WHITEOUT_PREFIX,
    Applier,
    UnpackError,
    UnpackResult,
    clean_parts,
)
from runtime.images.compression import (
    Counted,
    InflateError,
    MislabelledLayer,
    OverCap,
    Readable,
    TarInput,
    decompressed,
)
from runtime.images.lowerlinks import resolve_link
from runtime.images.tarsum import install as _fast_tar_checksums

_fast_tar_checksums()  # every layer header is checksummed: ~10 us each in the stdlib's way

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_LAYER_BYTES", "OPAQUE", "WHITEOUT_PREFIX",
           "Detached", "UnpackError", "UnpackResult", "apply_layer", "clean_parts",
           "unpack_detached"]


@dataclass
class Detached:
    """A layer unpacked without its parents; resolve() finishes it once they are committed."""

    root: str
    result: UnpackResult
    applier: Applier

    def resolve(self, lowers: list[str]) -> UnpackResult:
        """Do what needed the parents (lowers: committed parent dirs, top first)."""
        ap = self.applier
        ap.root = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        ap.lowers = []
        try:
            ap.lowers = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lowers]
            for rel, ino in sorted(ap.implicit.items()):
                ap.resolve_implicit(rel, ino)
            for link in ap.links:
                resolve_link(ap, link)
            ap.finish()
        finally:
            for fd in [ap.root, *ap.lowers]:
                os.close(fd)
        return self.result


def unpack_detached(
    stream: Readable,
    root: str,
    media_type: str = "",
    max_bytes: int = DEFAULT_MAX_LAYER_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    vet: Callable[[tarfile.TarInfo], None] | None = None,
) -> Detached:
    """Unpack a (possibly compressed) layer stream into root, touching nothing of its parents.

    `vet` sees every header before it is applied and may refuse it by raising (build
    contexts refuse what a layer may hold, such as device nodes)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    ap = Applier(root_fd, None, max_bytes)
    entries = 0
    try:
        try:
            counted = Counted(decompressed(stream, media_type), max_bytes)
            inp = TarInput(counted)
            with tarfile.open(fileobj=inp, mode="r:") as tf:  # type: ignore[call-overload]

                def body(m: tarfile.TarInfo) -> Iterator[bytes | memoryview]:
                    if m.sparse is None:
                        return inp.chunks(m.size)
                    src = tf.extractfile(m)  # a GNU sparse file: tarfile knows the holes
                    assert src is not None
                    return iter(lambda: src.read(1 << 20), b"")

                for m in tf:
                    entries += 1
                    if entries > max_entries:
                        raise UnpackError(f"layer has more than the cap of {max_entries} entries")
                    if vet is not None:
                        vet(m)
                    ap.apply(m, body)
            counted.drain()
        except (OverCap, MislabelledLayer) as e:
            raise UnpackError(str(e)) from e
        except (tarfile.TarError, EOFError, zstandard.ZstdError, InflateError,
                io.UnsupportedOperation) as e:
            raise UnpackError(f"corrupt layer: {e}") from e
    except BaseException:
        ap.close()  # the fds kept for the commit's fsync: no commit is coming
        raise
    finally:
        ap.drop_parent()
        os.close(root_fd)
    result = UnpackResult("sha256:" + counted.h.hexdigest(), counted.n, ap.file_bytes, entries)
    return Detached(root, result, ap)


def apply_layer(
    stream: Readable,
    root: str,
    lowers: list[str],
    media_type: str = "",
    max_bytes: int = DEFAULT_MAX_LAYER_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    vet: Callable[[tarfile.TarInfo], None] | None = None,
) -> UnpackResult:
    """Unpack a layer stream into root on top of lowers (parents, top first), in one go."""
    detached = unpack_detached(stream, root, media_type, max_bytes, max_entries, vet)
    try:
        return detached.resolve(lowers)
    finally:
        detached.applier.close()
