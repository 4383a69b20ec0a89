"""Floods: CONTINUATION, HPACK, rapid reset, PING/SETTINGS from a client that never reads,
more streams than advertised. Every loop is bounded; the server must end or absorb each."""

from __future__ import annotations

import time

import hpack
import pytest
from hyperframe.frame import PingFrame

from tests.transport.rawh2 import (
    ACK,
    CANCEL,
    CONTINUATION,
    END_HEADERS,
    HEADERS,
    MAX_CONCURRENT_STREAMS,
    PING,
    RST_STREAM,
    SETTINGS,
    RawConn,
    frame,
    request_headers,
)

FLOOD_SECONDS = 5.0  # how long one flood may push before we stop it


def _push(c: RawConn, chunk: bytes, total: int, seconds: float = FLOOD_SECONDS) -> int:
    """Send chunk until `total` bytes went out, the server stopped taking them for a second, or
    time is up. Keep chunks well under a socket buffer, so that the first one goes out even
    when a loaded server has not read yet (CI once saw a 170 KB first chunk wait over 1 s)."""
    c.sock.settimeout(1.0)
    sent, deadline = 0, time.monotonic() + seconds
    while sent < total and time.monotonic() < deadline:
        if not c.send(chunk):
            break
        sent += len(chunk)
    return sent


@pytest.mark.rss_unbounded_on(
    "containerd", "CVE-2023-45288: the golang.org/x/net that containerd 1.6.20 vendors buffers "
    "CONTINUATION frames up to grpc-go's 16 MiB header list limit per connection (+141 MiB here)")
def test_continuation_flood(peer):
    """CVE-2024-27316 class: HEADERS without END_HEADERS, then CONTINUATION without end, 8 MiB
    on each of 4 connections. Decoding must go on (HPACK state is per connection) but nothing
    may accumulate: berthd's h2 ends the connection after 64 CONTINUATION frames (GOAWAY), grpc-go
    drops the list past its header limit and keeps reading, so the check that matters is the
    fixture's RSS bound and the fresh Version call."""
    conns = [RawConn(peer.socket) for _ in range(4)]
    try:
        for c in conns:
            c.start()
            c.send(frame(HEADERS, 0, 1, c.block(request_headers())))
            one = frame(CONTINUATION, 0, 1, b"\x40\x01x\x01y" * 3000)  # "x: y", indexed anew
            _push(c, one * 16, 8 << 20)
        peer.answers()  # while the floods' connections are still open
    finally:
        for c in conns:
            c.close()


def test_hpack_bomb(peer):
    """One 4 KiB dynamic-table entry referenced 16,000 times: 64 MiB of decoded headers from
    16 KB on the wire. The header list limit must refuse it, not decode it all."""
    with RawConn(peer.socket) as c:
        c.start()
        enc = hpack.Encoder()
        first = enc.encode(request_headers() + [("x-bomb", "a" * 4000)])
        c.send(frame(HEADERS, END_HEADERS, 1, first))
        index = 62  # the entry just added is the newest in the dynamic table
        refs = bytes([0x80 | index]) * 16000  # indexed header field representations
        c.send(frame(HEADERS, END_HEADERS, 3, refs[:16000]))
        out = c.read(10.0, until_streams={3})
        assert out.ended or 3 in out.resets() or 3 in out.statuses(), \
            f"{peer.name} neither refused nor answered the bomb stream"


def test_many_distinct_header_blocks(peer):
    """20,000 header blocks, each with a header never seen before, in batches of 1,000 calls
    (to a method nobody serves, so the cost is the transport's) answered before the next:
    header decoding state must not keep them all."""
    with RawConn(peer.socket) as c:
        c.start()
        sid = 1
        for batch in range(20):
            sids, chunk = [], b""
            for i in range(1000):
                chunk += c.call(sid, path="/probe.Unknown/Call", extra=[(f"x-d{batch}-{i}", "v")])
                sids.append(sid)
                sid += 2
            c.send(chunk)
            out = c.read(30.0, until_streams=set(sids))
            assert not out.ended, f"{peer.name} ended the connection at batch {batch}"
        assert set(out.statuses().values()) == {"12"}  # UNIMPLEMENTED, every one


def test_rapid_reset(peer):
    """CVE-2023-44487: 20,000 streams opened and cancelled at once. The server may GOAWAY the
    connection or absorb the resets; either way it must stay healthy (the fixture's checks)."""
    with RawConn(peer.socket) as c:
        c.start()
        block = c.block(request_headers())  # the same block each time: the encoder indexes it
        burst = b""
        for n in range(20000):
            sid = 1 + 2 * n
            burst += frame(HEADERS, END_HEADERS, sid, c.encoder.encode(request_headers())
                           if n else block) + frame(RST_STREAM, 0, sid, CANCEL.to_bytes(4, "big"))
            if len(burst) > 1 << 16:
                if not c.send(burst):
                    break
                burst = b""
        c.send(burst)
        c.read(5.0)


def test_calls_reset_as_they_arrive(peer):
    """5,000 whole calls, each reset right behind its request (1,000 on each of 5 connections,
    within a rapid-reset budget): a call cancelled before it ever ran must still give back its
    slot among the calls in flight (berthd allows 4,096), or the fresh Version call after it
    is refused."""
    conns = [RawConn(peer.socket) for _ in range(5)]
    try:
        for c in conns:
            c.start()
            c.send(b"".join(c.call(1 + 2 * n) + frame(RST_STREAM, 0, 1 + 2 * n,
                                                       CANCEL.to_bytes(4, "big"))
                            for n in range(1000)))
        for c in conns:
            c.read(2.0)
    finally:
        for c in conns:
            c.close()


def test_ping_flood_never_read(peer):
    """A million PINGs (17 MB) from a client that never reads the ACKs: the server must stop
    reading (socket back-pressure) or GOAWAY, not queue a million ACKs."""
    with RawConn(peer.socket) as c:
        c.start()
        ping = frame(PING, 0, 0, b"12345678")
        sent = _push(c, ping * 1000, len(ping) * 1_000_000)
    assert sent > 0


def test_settings_flood_never_read(peer):
    """The same with empty SETTINGS frames, each of which asks for an ACK."""
    with RawConn(peer.socket) as c:
        c.start()
        empty = frame(SETTINGS, 0, 0)
        sent = _push(c, empty * 1000, len(empty) * 1_000_000)
    assert sent > 0


def test_bad_pings(peer):
    """A PING ACK from the client is never answered, a 16-byte PING is a FRAME_SIZE_ERROR."""
    with RawConn(peer.socket) as c:
        c.start()
        c.send(frame(PING, ACK, 0, b"12345678") + frame(PING, 0, 0, b"1234567812345678"))
        out = c.read(5.0)
        assert out.ended, f"{peer.name} answered a 16-byte PING"
        assert not [f for f in out.frames if isinstance(f, PingFrame) and "ACK" in f.flags
                    and f.opaque_data == b"12345678"], f"{peer.name} answered a PING ACK"


def test_more_streams_than_advertised(peer):
    """Open the advertised limit plus 100 streams (none ends): the surplus must be refused.
    containerd advertises no limit (grpc-go's default is unlimited): there we open 1,100 and
    it keeps them all, which is its documented behaviour, and the fixture's checks still apply."""
    with RawConn(peer.socket) as c:
        c.start()
        limit = c.server_settings().get(MAX_CONCURRENT_STREAMS)
        if peer.name == "berth":
            assert limit == 1000
        count = (limit or 1000) + 100
        c.send(b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * n, c.block(request_headers()))
                        for n in range(count)))
        out = c.read(5.0, until_ended=True)
        if limit is not None:
            refused = [s for s in out.resets() if s > 2 * limit]
            assert out.ended or refused, f"{peer.name} accepted {count} streams over {limit}"
