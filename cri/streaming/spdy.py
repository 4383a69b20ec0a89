"""SPDY/3.1 frame codec: kubelet and kubectl still stream over it and no maintained Python
library speaks it. Pure functions and two small stateful parts (the per-direction zlib header
contexts and the incremental frame parser); no I/O."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_FRAME = 1 << 20  # our cap on one frame's payload; Go peers write 32 KiB chunks
MAX_HEADER_BLOCK = 64 << 10  # decompressed header block cap: no zlib bombs

_WORDS = (  # noqa: SIM905 - one readable block beats 66 quoted words
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin"
).split()
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed header
# words followed by common values. Both ends must use it byte for byte.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.replace("_", " ").encode()
                     for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer sent something SPDY/3.1 does not allow; the session must end."""


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway
         | WindowUpdate)


class HeaderCompressor:
    """One zlib stream per direction for the whole session, flushed at every header block."""

    def __init__(self) -> None:
        # A 2 KiB window still covers the dictionary and our tiny header blocks, and keeps
        # per-session zlib state at a few KiB instead of ~260 KiB.
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 11, 2,
                                   zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        parts = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            key, val = name.lower().encode(), "\0".join(values).encode()
            parts += [struct.pack(">I", len(key)), key, struct.pack(">I", len(val)), val]
        return self._z.compress(b"".join(parts)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving half of the session's header zlib stream."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block: {exc}") from None
        if self._z.unconsumed_tail:
            raise ProtocolError("header block too large")
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    """name/value pairs; several values of one name arrive NUL-separated."""
    try:
        (count,), pos = struct.unpack_from(">I", raw), 4
        out: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (v,) = struct.unpack_from(">I", raw, pos)
            value = raw[pos + 4 : pos + 4 + v].decode()
            pos += 4 + v
            if pos > len(raw):
                raise ProtocolError("truncated header block")
            out.setdefault(name.lower(), []).extend(value.split("\0"))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad header block: {exc}") from None
    return out


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF,
                       ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def syn_stream(z: HeaderCompressor, stream_id: int, headers: Headers, fin: bool = False,
               priority: int = 0) -> bytes:
    head = struct.pack(">IIBB", stream_id, 0, (priority & 7) << 5, 0)
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, head + z.compress(headers))


def syn_reply(z: HeaderCompressor, stream_id: int, headers: Headers, fin: bool = False) -> bytes:
    return _control(SYN_REPLY, FLAG_FIN if fin else 0,
                    struct.pack(">I", stream_id) + z.compress(headers))


def rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream_id: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))


def settings(entries: list[tuple[int, int, int]]) -> bytes:
    body = b"".join(struct.pack(">II", (f << 24) | i, v) for f, i, v in entries)
    return _control(SETTINGS, 0, struct.pack(">I", len(entries)) + body)


def window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))


class FrameParser:
    """Incremental: feed bytes as they arrive, get whole frames back."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._headers = HeaderDecompressor()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buf += chunk
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            word, flags_len = struct.unpack_from(">II", self._buf)
            length = flags_len & 0xFFFFFF
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds {self._max}")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            flags = flags_len >> 24
            if word & 0x80000000:
                frame = self._control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Data(word & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control(self, version: int, ftype: int, flags: int, p: bytes) -> Frame | None:
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not 3")
        fin = bool(flags & FLAG_FIN)
        try:
            if ftype == SYN_STREAM:
                sid, assoc, pri = struct.unpack_from(">IIB", p)
                return SynStream(sid & 0x7FFFFFFF, self._headers.decompress(p[10:]), fin,
                                 assoc & 0x7FFFFFFF, pri >> 5)
            if ftype in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", p)
                cls = SynReply if ftype == SYN_REPLY else HeadersFrame
                return cls(sid & 0x7FFFFFFF, self._headers.decompress(p[4:]), fin)
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return RstStream(sid & 0x7FFFFFFF, status)
            if ftype == SETTINGS:
                (n,) = struct.unpack_from(">I", p)
                entries = []
                for i in range(n):
                    fid, value = struct.unpack_from(">II", p, 4 + 8 * i)
                    entries.append((fid >> 24, fid & 0xFFFFFF, value))
                return Settings(entries)
            if ftype == PING:
                return Ping(struct.unpack_from(">I", p)[0])
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", p) if len(p) >= 8 else (
                    struct.unpack_from(">I", p)[0], 0)
                return GoAway(last & 0x7FFFFFFF, status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error as exc:
            raise ProtocolError(f"short control frame {ftype}: {exc}") from None
        return None  # unknown control frames are ignored, as the spec asks
