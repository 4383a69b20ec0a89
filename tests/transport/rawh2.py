"""A raw HTTP/2 client for probing servers: sends any frame, valid or not, and reads frames back.

Frames we send are built byte by byte on purpose (most of the battery's frames are ones a
library would refuse to make); frames we receive are parsed by hyperframe and header blocks
are coded by hpack, so no part of the probe reimplements what it checks.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
MAX_FRAME_SIZE, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS = 0x5, 0x4, 0x3
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL = 0x1, 0x3, 0x6, 0x8
MAX_WINDOW = (1 << 31) - 1
VERSION = "/runtime.v1.RuntimeService/Version"
# VersionRequest{version: "v1"} as a gRPC message: flag, 4-byte length, protobuf bytes
VERSION_BODY = b"\x00\x00\x00\x00\x04\x0a\x02v1"


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One frame as bytes, whatever its fields say (the length is the payload's)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) \
        + payload


def settings(pairs: Iterable[tuple[int, int]] = ()) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def request_headers(path: str = VERSION, extra: Iterable[tuple[str, str]] = ()) -> list[
        tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
            *extra]


@dataclass
class Outcome:
    """What the server did on one connection while we read it."""

    frames: list[Frame] = field(default_factory=list)
    goaway: int | None = None  # error code of a GOAWAY, if one came
    closed: bool = False  # the server closed the connection (EOF or reset)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)  # decoded, per stream

    def resets(self) -> dict[int, int]:
        return {f.stream_id: f.error_code for f in self.frames if isinstance(f, RstStreamFrame)}

    def statuses(self) -> dict[int, str]:
        """grpc-status of every stream that got one (trailers or trailers-only)."""
        return {sid: h["grpc-status"] for sid, h in self.headers.items() if "grpc-status" in h}

    @property
    def ended(self) -> bool:
        """The connection is over: a GOAWAY with an error, or closed."""
        return self.closed or (self.goaway is not None and self.goaway != 0)


class RawConn:
    """One unix-socket connection speaking raw HTTP/2 as a client."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.outcome = Outcome()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def start(self, pairs: Iterable[tuple[int, int]] = (), open_window: bool = True) -> None:
        """Preface and our SETTINGS (plus an ACK of the server's, which may not have come yet).
        open_window: windows at their maximum, so replies never wait on flow control (this
        client sends no WINDOW_UPDATE as it reads)."""
        pairs = list(pairs)
        if open_window:
            pairs.insert(0, (INITIAL_WINDOW_SIZE, MAX_WINDOW))
        grow = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535))
        self.send(PREFACE + settings(pairs) + frame(SETTINGS, ACK, 0) + grow * open_window)

    def send(self, data: bytes) -> bool:
        """False once the server has stopped taking bytes (closed, reset or timed out)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(headers)

    def call(self, sid: int, path: str = VERSION, body: bytes = VERSION_BODY,
             extra: Iterable[tuple[str, str]] = ()) -> bytes:
        """HEADERS and DATA(END_STREAM) of one unary call, as bytes to send."""
        return frame(HEADERS, END_HEADERS, sid, self.block(request_headers(path, extra))) + \
            frame(DATA, END_STREAM, sid, body)

    def read(self, seconds: float, until_ended: bool = True,
             until_streams: set[int] | None = None) -> Outcome:
        """Read frames for up to `seconds`; stop early when the connection ends, or when every
        stream in until_streams has ended (END_STREAM or RST_STREAM)."""
        deadline = time.monotonic() + seconds
        pending = set(until_streams or ())
        while time.monotonic() < deadline:
            if until_ended and self.outcome.ended:
                break
            if until_streams is not None and not pending:
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except OSError:
                self.outcome.closed = True
                break
            if not chunk:
                self.outcome.closed = True
                break
            self.buf += chunk
            for f in self._parse():
                self.outcome.frames.append(f)
                if isinstance(f, HeadersFrame):  # decoded once, in order: HPACK has state
                    fields = self.outcome.headers.setdefault(f.stream_id, {})
                    fields.update((str(k), str(v)) for k, v in self.decoder.decode(f.data))
                if isinstance(f, GoAwayFrame):
                    self.outcome.goaway = f.error_code
                if isinstance(f, RstStreamFrame) or "END_STREAM" in f.flags:
                    pending.discard(f.stream_id)
        return self.outcome

    def _parse(self) -> list[Frame]:
        out = []
        while len(self.buf) >= 9:
            try:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            except HyperframeError:  # a frame type hyperframe does not know: skip it
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                self.buf = self.buf[9 + length:]
                continue
            if len(self.buf) < 9 + length:
                break
            f.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            out.append(f)
        return out

    def server_settings(self, timeout: float = 5.0) -> dict[int, int]:
        """The server's first SETTINGS, reading until it has come (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            for f in self.outcome.frames:
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    return dict(f.settings)
            left = deadline - time.monotonic()
            if left <= 0 or self.outcome.ended:
                return {}
            self.read(min(left, 0.2), until_ended=True)
