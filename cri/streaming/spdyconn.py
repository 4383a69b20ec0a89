"""A SPDY/3.1 session over any byte transport, for both ends: streams with bounded inboxes,
SYN_REPLY for accepted streams, PING echo, FIN half-close and GOAWAY."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from cri.streaming import spdy

HIGH_WATER = 1 << 20  # unread inbound bytes per session before we stop reading the socket
LOW_WATER = 256 << 10
FLUSH_AT = 64 << 10


class Stream:
    """One SPDY stream; read() returns b"" once the peer half-closed or reset it."""

    def __init__(self, conn: Connection, stream_id: int, headers: spdy.Headers) -> None:
        self.conn, self.id, self.headers = conn, stream_id, headers
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.replied = asyncio.Event()

    def header(self, name: str) -> str:
        return (self.headers.get(name) or [""])[0]

    def _push(self, data: bytes, fin: bool) -> None:
        if data and not self.remote_closed:
            self._chunks.append(data)
            self.conn._buffered(len(data))
        if fin:
            self.remote_closed = True
        self._readable.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self.remote_closed:
                self.conn._forget_if_done(self)
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self.conn._buffered(-len(chunk))
        return chunk

    async def write(self, payload: bytes) -> None:
        """Send data; silently dropped once the stream was reset or the session is gone."""
        for i in range(0, len(payload), spdy.MAX_FRAME // 2):
            if self.local_closed or self.reset or self.conn.closed.is_set():
                return
            await self.conn._send(spdy.data(self.id, payload[i : i + spdy.MAX_FRAME // 2]))

    async def close(self) -> None:
        """Half-close our side (FIN)."""
        if not (self.local_closed or self.reset or self.conn.closed.is_set()):
            self.local_closed = True
            await self.conn._send(spdy.data(self.id, b"", fin=True))
            self.conn._forget_if_done(self)

    def abort(self) -> None:
        """RST_STREAM: the peer drops whatever it still had for us."""
        if not self.reset:
            self.reset = True
            self._drop_inbox()
            self.conn.streams.pop(self.id, None)
            self.conn._send_nowait(spdy.rst_stream(self.id, spdy.RST_CANCEL))

    def _drop_inbox(self) -> None:
        self.conn._buffered(-sum(map(len, self._chunks)))
        self._chunks.clear()
        self.remote_closed = True
        self._readable.set()


class Connection:
    """Either end of a session; the server side answers every SYN_STREAM it accepts."""

    def __init__(self, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]],
                 pause: Callable[[bool], None], close: Callable[[], None], server: bool,
                 on_stream: Callable[[Stream], bool] | None = None) -> None:
        self._write, self._drain, self._pause, self._close = write, drain, pause, close
        self.server = server
        self.on_stream = on_stream
        self.streams: dict[int, Stream] = {}
        self.closed = asyncio.Event()
        self._parser = spdy.FrameParser()
        self._z = spdy.HeaderCompressor()
        self._next_id = 2 if server else 1
        self._last_peer_id = 0
        self._inbound = 0
        self._paused = False
        self._out: list[bytes] = []  # frames queued this loop turn: one send() for all
        self._out_len = 0
        self._flush_handle: asyncio.Handle | None = None

    def _buffered(self, delta: int) -> None:
        self._inbound += delta
        if not self._paused and self._inbound > HIGH_WATER:
            self._paused = True
            self._pause(True)
        elif self._paused and self._inbound < LOW_WATER:
            self._paused = False
            self._pause(False)

    def _send_nowait(self, frame: bytes) -> None:
        if self.closed.is_set():
            return
        self._out.append(frame)
        self._out_len += len(frame)
        if self._out_len >= FLUSH_AT:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_len = 0
            self._write(data)

    async def _send(self, frame: bytes) -> None:
        if self.closed.is_set():
            return
        self._send_nowait(frame)
        try:
            await self._drain()
        except (ConnectionError, RuntimeError):
            self.shutdown()

    def feed(self, chunk: bytes) -> None:
        """Bytes from the transport; a protocol error ends the session."""
        try:
            frames = self._parser.feed(chunk)
        except spdy.ProtocolError:
            self._send_nowait(spdy.goaway(self._last_peer_id, 1))
            self.shutdown()
            return
        for frame in frames:
            self._dispatch(frame)

    def feed_eof(self) -> None:
        self.shutdown()

    def _dispatch(self, f: spdy.Frame) -> None:
        if isinstance(f, spdy.Data):
            st = self.streams.get(f.stream_id)
            if st is None:
                self._send_nowait(spdy.rst_stream(f.stream_id, spdy.RST_INVALID_STREAM))
            else:
                st._push(f.data, f.fin)
                self._forget_if_done(st)
        elif isinstance(f, spdy.SynStream):
            self._accept(f)
        elif isinstance(f, spdy.SynReply):
            if (st := self.streams.get(f.stream_id)) is not None:
                st.replied.set()
                st._push(b"", f.fin)
        elif isinstance(f, spdy.RstStream):
            if (st := self.streams.pop(f.stream_id, None)) is not None:
                st.reset = True  # no more writes; what already arrived stays readable
                st.replied.set()
                st._push(b"", True)
        elif isinstance(f, spdy.Ping):
            if (f.id % 2 == 1) == self.server:  # the peer's ping: echo it
                self._send_nowait(spdy.ping(f.id))
        elif isinstance(f, spdy.GoAway):
            self.shutdown()
        elif (isinstance(f, spdy.HeadersFrame) and f.fin
              and (st := self.streams.get(f.stream_id)) is not None):
            st._push(b"", True)

    def _accept(self, f: spdy.SynStream) -> None:
        if f.stream_id <= self._last_peer_id or (f.stream_id % 2 == 0) == self.server:
            self._send_nowait(spdy.rst_stream(f.stream_id, spdy.RST_PROTOCOL_ERROR))
            return
        self._last_peer_id = f.stream_id
        st = Stream(self, f.stream_id, f.headers)
        st._push(b"", f.fin)
        if self.on_stream is None or not self.on_stream(st):
            self._send_nowait(spdy.rst_stream(f.stream_id, spdy.RST_REFUSED_STREAM))
            return
        self.streams[st.id] = st
        self._send_nowait(spdy.syn_reply(self._z, st.id, {}))

    def _forget_if_done(self, st: Stream) -> None:
        if st.remote_closed and st.local_closed and not st._chunks:
            self.streams.pop(st.id, None)

    async def open_stream(self, headers: spdy.Headers, timeout: float = 30.0) -> Stream:
        """Client side: SYN_STREAM and wait for the peer's SYN_REPLY."""
        sid, self._next_id = self._next_id, self._next_id + 2
        st = Stream(self, sid, headers)
        self.streams[sid] = st
        self._send_nowait(spdy.syn_stream(self._z, sid, headers))
        await asyncio.wait_for(st.replied.wait(), timeout)
        if st.reset or self.closed.is_set():
            raise ConnectionError(f"stream {headers} was refused")
        return st

    async def aclose(self) -> None:
        """Tell the peer we are done (FIN on our open streams, GOAWAY), then drop the link."""
        for st in list(self.streams.values()):
            with contextlib.suppress(ConnectionError):
                await st.close()
        self._send_nowait(spdy.goaway(self._last_peer_id))
        self.shutdown()

    def shutdown(self) -> None:
        """Immediate teardown: readers get what had arrived, then EOF."""
        if self.closed.is_set():
            return
        self._flush()
        self.closed.set()
        for st in self.streams.values():  # what already arrived can still be read
            st.remote_closed = True
            st._readable.set()
            st.replied.set()
        self.streams.clear()
        self.on_stream = None  # break the handler <-> connection cycle at once
        if self._paused:
            self._paused = False
            self._pause(False)
        self._close()
