"""The SPDY session (both ends wired back to back in memory), tokens and small helpers."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cri.streaming import remotecommand, spdy, spdyconn
from cri.streaming.tokens import AttachJob, TokenCache, TooManyPending

pytestmark = pytest.mark.timeout(30)


def pair(on_stream: object) -> tuple[spdyconn.Connection, spdyconn.Connection, list[bool]]:
    """client <-> server, each write delivered on the next loop turn."""
    loop = asyncio.get_running_loop()
    pauses: list[bool] = []
    ends: dict[str, spdyconn.Connection] = {}

    async def nodrain() -> None:
        await asyncio.sleep(0)

    def make(peer: str, server: bool) -> spdyconn.Connection:
        def write(b: bytes) -> None:
            loop.call_soon(ends[peer].feed, b)

        def close() -> None:
            loop.call_soon(ends[peer].feed_eof)

        return spdyconn.Connection(write, nodrain, pauses.append if server else (lambda on: None),
                                   close, server=server,
                                   on_stream=on_stream if server else None)  # type: ignore[arg-type]

    ends["c"], ends["s"] = make("s", False), make("c", True)
    return ends["c"], ends["s"], pauses


def test_streams_both_ways_with_half_close() -> None:
    async def go() -> None:
        got: list[spdyconn.Stream] = []
        def accept(st: spdyconn.Stream) -> bool:
            got.append(st)
            return st.header("ok") == "1"

        client, server, _ = pair(accept)
        st = await client.open_stream({"ok": ["1"], "streamtype": ["stdin"]})
        await st.write(b"ping")
        await st.close()
        peer = got[0]
        assert peer.header("streamtype") == "stdin"
        assert await peer.read() == b"ping" and await peer.read() == b""
        await peer.write(b"pong")
        await peer.close()
        assert await st.read() == b"pong" and await st.read() == b""
        assert not client.streams and not server.streams  # both sides closed: forgotten
        with pytest.raises(ConnectionError, match="refused"):
            await client.open_stream({"ok": ["0"]})
        await client.aclose()
        await asyncio.sleep(0.01)
        assert server.closed.is_set()

    asyncio.run(go())


def test_unread_input_pauses_the_transport_and_resumes() -> None:
    async def go() -> None:
        got: list[spdyconn.Stream] = []
        client, _, pauses = pair(lambda st: not got.append(st))  # type: ignore[func-returns-value]
        st = await client.open_stream({})
        for _ in range(40):
            await st.write(b"x" * 65536)
        await asyncio.sleep(0.01)
        assert pauses == [True]
        while len(pauses) < 2:
            assert await got[0].read()
        assert pauses == [True, False]

    asyncio.run(go())


def test_ping_is_echoed_and_eof_wakes_readers() -> None:
    async def go() -> None:
        sent: list[bytes] = []
        async def drain() -> None:
            pass

        conn = spdyconn.Connection(sent.append, drain, lambda on: None, lambda: None,
                                   server=True, on_stream=lambda st: True)
        conn.feed(spdy.ping(1) + spdy.ping(2) + spdy.ping(3))  # only the peer's (odd) pings
        await asyncio.sleep(0)
        assert sent == [spdy.ping(1) + spdy.ping(3)]  # answered, in one write
        conn.feed(spdy.syn_stream(spdy.HeaderCompressor(), 1, {}) + spdy.data(1, b"late"))
        reader = asyncio.ensure_future(next(iter(conn.streams.values())).read())
        conn.feed_eof()
        assert await reader == b"late"

    asyncio.run(go())


def test_resize_messages_split_anywhere() -> None:
    buf = bytearray()
    out = []
    for chunk in (b'{"Width":80,"He', b'ight":24}\n{"Width":1', b'00,"Height":30}'):
        buf += chunk
        out += remotecommand.parse_sizes(buf)
    assert out == [(80, 24), (100, 30)] and not buf


def test_status_by_protocol() -> None:
    v4 = json.loads(remotecommand.status("v4.channel.k8s.io", 3, ""))
    assert v4["reason"] == "NonZeroExitCode"
    assert v4["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(remotecommand.status("v5.channel.k8s.io", 0, "")) == {
        "metadata": {}, "status": "Success"}
    assert remotecommand.status("v3.channel.k8s.io", 0, "") == b""
    assert b"exit code 3" in remotecommand.status("v2.channel.k8s.io", 3, "")


def test_tokens_single_use_expiring_and_bounded() -> None:
    job = AttachJob("c", False, True, True, False)
    cache = TokenCache(ttl=0.2, max_pending=3)
    a = cache.put(job)
    assert len(a) >= 20 and cache.consume(a) == job and cache.consume(a) is None
    b = cache.put(job)
    time.sleep(0.25)
    assert cache.consume(b) is None and len(cache) == 0
    for _ in range(3):
        cache.put(job)
    with pytest.raises(TooManyPending):
        cache.put(job)
