"""Layer decompression picked by magic bytes, and a counting reader that enforces the cap."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import IO, Protocol, cast

import zstandard
from zlib_ng import zlib_ng

# zlib-ng's stub types `error` as an instance; it is the exception class
InflateError = cast("type[Exception]", zlib_ng.error)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class OverCap(Exception):
    """More uncompressed bytes than a layer may have (a decompression bomb)."""


class MislabelledLayer(Exception):
    """The media type promises a compression the bytes do not have."""


class Readable(Protocol):
    """Any forward-only byte source: a file, an HTTP stream, a download being followed."""

    def read(self, n: int = -1, /) -> bytes: ...


class Counted:
    """Hashes and counts the uncompressed tar stream and enforces the per-layer cap."""

    def __init__(self, raw: Readable, cap: int) -> None:
        self.raw, self.cap, self.n = raw, cap, 0
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n >= 0 else _CHUNK)
        self.n += len(data)
        if self.n > self.cap:
            raise OverCap(f"layer exceeds the size cap of {self.cap} bytes uncompressed")
        self.h.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _Peek:
    """Lets us sniff the compression magic from a forward-only stream."""

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self.head = raw.read(4)

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if 0 <= n < len(self.head):
            out, self.head = self.head[:n], self.head[n:]
            return out
        out, self.head = self.head, b""
        return out + self.raw.read(n - len(out) if n >= 0 else -1)


class Gunzip:
    """gzip members one after another, one inflate call per chunk, on zlib-ng: 2.5x the stdlib's
    zlib, whose inflate here also holds the GIL for most of its time (measured)."""

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self.d = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)
        self.pending = b""  # input zlib has not consumed yet

    def read(self, n: int = -1) -> bytes:
        limit = n if n > 0 else _CHUNK  # bounded output: a bomb never lands in memory at once
        while True:
            if self.d.eof:
                rest = self.d.unused_data.lstrip(b"\0")  # members may be padded with zeros
                while not rest:
                    more = self.raw.read(_CHUNK)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self.d, self.pending = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS), rest
            data = self.pending or self.raw.read(_CHUNK)
            if not data:
                raise EOFError("the layer ends inside a gzip member")
            out = self.d.decompress(data, limit)
            self.pending = self.d.unconsumed_tail
            if out:
                return out


def decompressed(raw: Readable, media_type: str = "") -> Readable:
    """Pick the decompressor from the magic bytes; the media type is only a hint."""
    peek = _Peek(raw)
    src: IO[bytes] = peek  # type: ignore[assignment]
    if peek.head.startswith(_GZIP_MAGIC):
        return Gunzip(peek)
    if peek.head.startswith(_ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    if media_type.endswith(("gzip", "zstd")) and peek.head:
        raise MislabelledLayer(f"layer declared {media_type} but has no matching magic")
    return src


class TarInput:
    """The decompressed layer as tarfile's "r:" mode reads it: exact reads, tell and a forward-only
    seek. File bodies are taken with chunks(), as views of what zlib returned: no copy under the
    GIL (tarfile's stream mode copies every byte about three times)."""

    def __init__(self, src: Readable) -> None:
        self.src = src
        self.pos = 0
        self._buf = memoryview(b"")

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise io.UnsupportedOperation("a layer stream is only read forward")
        while self.pos < pos and self._take(pos - self.pos):
            pass
        return self.pos

    def _take(self, n: int) -> memoryview:
        if not self._buf:
            self._buf = memoryview(self.src.read(_CHUNK))
        out, self._buf = self._buf[:n], self._buf[n:]
        self.pos += len(out)
        return out

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes unless the stream ends first (tarfile takes short for truncated)."""
        parts = []
        while n < 0 or n > 0:
            v = self._take(n if n >= 0 else _CHUNK)
            if not v:
                break
            parts.append(v)
            n -= len(v) if n >= 0 else 0
        return b"".join(parts)

    def chunks(self, n: int) -> Iterator[memoryview]:
        """The next n bytes, uncopied."""
        while n > 0:
            v = self._take(n)
            if not v:
                raise EOFError("the layer ends inside a file")
            n -= len(v)
            yield v
