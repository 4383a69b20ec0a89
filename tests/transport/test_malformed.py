"""Malformed frames and bad gRPC framing: a connection or stream error with the right code,
never a crash, a hang or a silent close without GOAWAY where RFC 9113 asks for one."""

from __future__ import annotations

import grpc
import pytest

from tests.fixtures.cri_client import CriClient
from tests.transport.rawh2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_SIZE_ERROR,
    HEADERS,
    MAX_FRAME_SIZE,
    PADDED,
    PROTOCOL_ERROR,
    VERSION,
    RawConn,
    frame,
    request_headers,
)

MiB = 1 << 20


def _headers(c: RawConn, sid: int) -> bytes:
    return frame(HEADERS, END_HEADERS, sid, c.block(request_headers()))


# (frames after the preface, connection errors RFC 9113 allows for them)
CASES = {
    # 6.1: a PADDED frame whose payload cannot even hold the Pad Length octet
    "padded-data-empty": (lambda c: _headers(c, 1) + frame(DATA, PADDED, 1),
                          {PROTOCOL_ERROR, FRAME_SIZE_ERROR}),
    "padded-headers-empty": (lambda c: frame(HEADERS, PADDED | END_HEADERS, 1),
                             {PROTOCOL_ERROR, FRAME_SIZE_ERROR}),
    "data-on-stream-0": (lambda c: frame(DATA, 0, 0, b"\0" * 8), {PROTOCOL_ERROR}),  # 6.1
    "even-stream-id": (lambda c: _headers(c, 2), {PROTOCOL_ERROR}),  # 5.1.1
    "ids-go-backwards": (lambda c: _headers(c, 5) + _headers(c, 3), {PROTOCOL_ERROR}),  # 5.1.1
    # 4.2: one byte over the SETTINGS_MAX_FRAME_SIZE the server advertised (both 16 KiB)
    "oversized-frame": (lambda c: _headers(c, 1) + frame(DATA, 0, 1, b"\0" * (
        c.server_settings().get(MAX_FRAME_SIZE, 16384) + 1)), {FRAME_SIZE_ERROR}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_frame(peer, case):
    """The connection ends with GOAWAY and an error code RFC 9113 allows, never a bare close;
    or, where the server chose to ignore the frame, the connection still serves a call.

    containerd differs here: grpc-go's server closes the connection on a framing error without
    sending GOAWAY (http2_server.HandleStreams closes the transport), so on containerd a bare
    close passes. berthd (h2) sends the GOAWAY."""
    build, allowed = CASES[case]
    with RawConn(peer.socket) as c:
        c.start()
        c.server_settings()  # read first: the oversized case depends on it
        c.send(build(c))
        out = c.read(5.0)
        if not out.ended:
            c.send(c.call(101))
            out = c.read(10.0, until_streams={101})
    if out.ended:
        if out.goaway is None and peer.name == "containerd":
            return  # grpc-go's bare close
        assert out.goaway is not None, f"{peer.name} closed without GOAWAY after {case}"
        assert out.goaway in allowed, f"{peer.name}: GOAWAY {out.goaway} after {case}"
    else:
        assert out.statuses().get(101) == "0", f"{peer.name} wedged after {case}"


@pytest.mark.parametrize("timeout", ["1\u0663S", "123456789S", "10x", "-1S", ""],
                         ids=["non-ascii-digit", "nine-digits", "bad-unit", "negative", "empty"])
def test_bad_grpc_timeout(peer, timeout):
    """grpc-timeout is at most 8 ASCII digits and a unit. A bad one may fail the call (any
    status) or be ignored (the call is answered); the connection and the daemon stay up."""
    with RawConn(peer.socket) as c:
        c.start()
        block = request_headers(extra=[("grpc-timeout", timeout)])
        c.send(frame(HEADERS, END_HEADERS, 1, c.encoder.encode(block))
               + frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x04\x0a\x02v1"))
        out = c.read(10.0, until_streams={1})
        answered = 1 in out.statuses() or 1 in out.resets()
        assert answered or out.ended, f"{peer.name} neither answered nor refused the call"


def test_huge_length_prefix_short_body(peer):
    """A gRPC message that claims 4 GiB and brings 3 bytes before END_STREAM: a status, not a
    4 GiB allocation or a stream left waiting."""
    with RawConn(peer.socket) as c:
        c.start()
        c.send(frame(HEADERS, END_HEADERS, 1, c.block(request_headers()))
               + frame(DATA, END_STREAM, 1, b"\x00\xff\xff\xff\xffabc"))
        out = c.read(10.0, until_streams={1})
        codes = out.statuses()
        assert codes.get(1, "0") != "0" or 1 in out.resets() or out.ended, \
            f"{peer.name} answered OK to a truncated 4 GiB message"


def test_over_limit_message(peer):
    """One byte over the peer's receive limit (berthd 4 MiB, containerd 16 MiB):
    RESOURCE_EXHAUSTED, and the next call on the same channel is served."""
    limit = 4 * MiB if peer.name == "berth" else 16 * MiB
    with CriClient(peer.endpoint) as cli:
        call = cli.channel.unary_unary(VERSION, request_serializer=None,
                                       response_deserializer=None)  # raw protobuf bytes
        body = b"\x0a\x02v1" + b"\x92\x01" + _varint(limit) + b"\0" * limit  # unknown field 18
        with pytest.raises(grpc.RpcError) as info:
            call(body, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        cli.version(timeout=10)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([byte])
        out += bytes([byte | 0x80])
