"""Layer decompression picked by magic bytes, and a counting reader that enforces the cap."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from typing import IO, BinaryIO, Protocol, cast

import zstandard
from zlib_ng import zlib_ng

# zlib-ng's stub types `error` as an instance; it is the exception class
InflateError = cast("type[Exception]", zlib_ng.error)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_INPUT = 1 << 18  # gzip_ng's input buffer, one per layer: a quarter of the pages of a MiB

class OverCap(Exception):
    """More uncompressed bytes than a layer may have (a decompression bomb)."""


class MislabelledLayer(Exception):
    """The media type promises a compression the bytes do not have."""


class Readable(Protocol):
    """Any forward-only byte source: a file, an HTTP stream, a download being followed."""

    def read(self, n: int = -1, /) -> bytes: ...


class ReadableInto(Readable, Protocol):
    """A source that can also fill the caller's buffer (0 only at its end)."""

    def readinto(self, b: memoryview, /) -> int: ...


class Counted:
    """Hashes and counts the uncompressed tar stream and enforces the per-layer cap."""

    def __init__(self, raw: ReadableInto, cap: int) -> None:
        self.raw, self.cap, self.n = raw, cap, 0
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n >= 0 else _CHUNK)
        self._count(data)
        return data

    def readinto(self, b: memoryview) -> int:
        n = self.raw.readinto(b)
        self._count(b[:n])
        return n

    def _count(self, data: bytes | memoryview) -> None:
        self.n += len(data)
        if self.n > self.cap:
            raise OverCap(f"layer exceeds the size cap of {self.cap} bytes uncompressed")
        self.h.update(data)

    def drain(self) -> None:
        buf = memoryview(bytearray(1 << 16))  # what follows the tar's end: its zero padding
        while self.readinto(buf):
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

    def readinto(self, b: memoryview) -> int:
        """How the gzip reader and TarInput take their input: straight into their buffer."""
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        into = getattr(self.raw, "readinto", None)
        if into is not None:  # files, BytesIO, a blob stream: no bytes object between
            return int(into(b))
        data = self.raw.read(len(b))
        b[: len(data)] = data
        return len(data)


class Gunzip:
    """gzip members one after another (zero padding between them allowed), on zlib-ng: 2.5x the
    stdlib's zlib, whose inflate here also holds the GIL for most of its time (measured).

    zlib-ng's gzip reader (the one its GzipFile reads through) inflates straight into the
    caller's buffer and fills it. A decompressobj grows each output from 16 KiB by realloc instead,
    copying it up to six times per MiB into fresh pages: half of a `big` pull's page faults."""

    def __init__(self, raw: _Peek) -> None:
        self.gz = zlib_ng._GzipReader(cast(BinaryIO, raw), _INPUT)

    def read(self, n: int = -1) -> bytes:
        try:  # bounded output: a bomb never lands in memory at once
            return bytes(self.gz.read(n if n > 0 else _CHUNK))
        except gzip.BadGzipFile as e:
            raise InflateError(str(e)) from e

    def readinto(self, b: memoryview) -> int:
        try:
            return self.gz.readinto(b)
        except gzip.BadGzipFile as e:  # a bad magic, CRC or length: as corrupt as a bad block
            raise InflateError(str(e)) from e


def decompressed(raw: Readable, media_type: str = "") -> ReadableInto:
    """Pick the decompressor from the magic bytes; the media type is only a hint."""
    peek = _Peek(raw)
    if peek.head.startswith(_GZIP_MAGIC):
        return Gunzip(peek)
    if peek.head.startswith(_ZSTD_MAGIC):
        src: IO[bytes] = peek  # type: ignore[assignment]
        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    if media_type.endswith(("gzip", "zstd")) and peek.head:
        raise MislabelledLayer(f"layer declared {media_type} but has no matching magic")
    return peek


class TarInput:
    """The decompressed layer as tarfile's "r:" mode reads it: exact reads, tell and a forward-only
    seek. File bodies are taken with chunks(), as views of the one buffer the decompressor fills:
    no copy under the GIL (tarfile's stream mode copies every byte about three times) and no
    fresh memory per MiB."""

    def __init__(self, src: ReadableInto) -> None:
        self.src = src
        self.pos = 0
        self._out = memoryview(bytearray(_CHUNK))
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
            self._buf = self._out[: self.src.readinto(self._out)]
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
            parts.append(v.tobytes())  # the next _take may refill what v shows
            n -= len(v) if n >= 0 else 0
        return b"".join(parts)

    def chunks(self, n: int) -> Iterator[memoryview]:
        """The next n bytes, uncopied: each view is valid until the next is asked for (the
        buffer is refilled then), so write it out before."""
        while n > 0:
            v = self._take(n)
            if not v:
                raise EOFError("the layer ends inside a file")
            n -= len(v)
            yield v
