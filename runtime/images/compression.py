"""Layer decompression picked by magic bytes, and a counting reader that enforces the cap."""

from __future__ import annotations

import hashlib
import zlib
from typing import IO, Protocol

import zstandard

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
    """gzip members one after another, one zlib call per chunk (GzipFile costs far more Python)."""

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
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
                self.d, self.pending = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
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
