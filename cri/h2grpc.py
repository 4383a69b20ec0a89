"""gRPC over HTTP/2 on asyncio: grpcio's server spends twice containerd's whole call in Python."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import hpack

from cri.h2call import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    RESPONSE_HEADERS,
    RST_STREAM,
    SERVER_HELLO,
    SETTINGS,
    WINDOW_UPDATE,
    CallDetails,
    Context,
    Handler,
    fail_call,
    frame,
    resume,
    run_stream,
    run_unary,
    serialize,
    status_block,
)


class Stream:
    """One call: request bytes in, framed response bytes out under the peer's flow control."""

    def __init__(self, conn: Connection, sid: int, headers: dict[str, str]) -> None:
        self.conn, self.sid, self.headers = conn, sid, headers
        self.body: list[bytes] = []
        self.size = 0
        self.window = conn.peer_window
        self.out = bytearray()
        self.trailers: bytes | None = None
        self.sent_headers = False
        self.reset = self.closed = False
        self.task: asyncio.Task[Any] | None = None
        self.drained: asyncio.Future[None] | None = None

    def message(self, payload: bytes) -> bool:
        """Queue one response message; False while the peer's window holds some of it back."""
        if self.closed:
            return True
        if not self.sent_headers:
            self.sent_headers = True
            self.conn.send(frame(HEADERS, END_HEADERS, self.sid, RESPONSE_HEADERS))
        self.out += len(payload).to_bytes(5, "big")
        self.out += payload
        return self.conn.flush(self)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        if self.closed:
            return
        block = status_block(code, details)
        if not self.sent_headers:  # trailers-only response
            self.sent_headers = True
            block = RESPONSE_HEADERS + block
        self.trailers = block
        self.conn.flush(self)


class Connection(asyncio.Protocol):
    """One client connection: frames in, calls dispatched, frames out in one write per read."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.decoder = hpack.Decoder()
        self.header_cache: dict[bytes, dict[str, str]] = {}
        self.streams: dict[int, Stream] = {}
        self.buf = b""
        self.preface = False
        self.pending: tuple[int, int, bytearray] | None = None
        self.peer_window = 65535
        self.window = 65535
        self.max_frame = 16384
        self.consumed = 0
        self.last_sid = 0
        self.out: list[bytes] = []
        self.batching = False
        self.dead = False  # a protocol error closed the connection: read nothing more
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.conns.add(self)
        transport.write(SERVER_HELLO)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        for st in list(self.streams.values()):
            self._drop(st)
        self.transport = None

    def send(self, data: bytes) -> None:
        if self.batching:
            self.out.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def goaway(self, error: int = 0) -> None:
        self.send(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_sid, error)))

    def _fail(self, error: int) -> None:
        self.dead = True
        self.goaway(error)
        self._write_out()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        if not self.preface:
            if n < 24:
                self.buf = buf
                return
            if buf[:24] != PREFACE:
                self._fail(1)
                return
            self.preface, pos = True, 24
        self.batching = True
        try:
            while n - pos >= 9 and not self.dead:
                length, flags, sid = FRAME.unpack_from(buf, pos)
                ftype, length = length & 0xFF, length >> 8
                if length > 16384:
                    self._fail(6)  # FRAME_SIZE_ERROR
                    return
                if n - pos - 9 < length:
                    break
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                self._frame(ftype, flags, sid & MAX_WINDOW, payload)
        except hpack.HPACKError:
            self._fail(9)  # COMPRESSION_ERROR
            return
        finally:
            self._write_out()
        self.buf = buf[pos:]

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.pending is not None and ftype != CONTINUATION:
            self._fail(1)
        elif ftype == DATA:
            self.consumed += len(payload)
            if self.consumed > 1 << 24:
                self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed)))
                self.consumed = 0
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            st = self.streams.get(sid)
            if st is not None and st.task is None:
                st.body.append(payload)
                st.size += len(payload)
                if st.size > self.server.max_message + 5:
                    self._reject(st, grpc.StatusCode.RESOURCE_EXHAUSTED, "request too large")
                elif flags & END_STREAM:
                    self._dispatch(st)
        elif ftype == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(sid, flags, payload)
            else:
                self.pending = (sid, flags, bytearray(payload))
        elif ftype == CONTINUATION:
            if self.pending is None or self.pending[0] != sid:
                self._fail(1)
                return
            self.pending[2].extend(payload)
            if flags & END_HEADERS:
                sid, first, block = self.pending
                self.pending = None
                self._headers(sid, first, bytes(block))
        elif ftype == SETTINGS and not flags & ACK:
            self._settings(payload)
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = int.from_bytes(payload, "big") & MAX_WINDOW
            if sid == 0:
                self.window += inc
                for st in list(self.streams.values()):
                    self.flush(st)
            elif (st := self.streams.get(sid)) is not None:
                st.window += inc
                self.flush(st)
        elif ftype == RST_STREAM and (st := self.streams.get(sid)) is not None:
            st.reset = True
            self._drop(st)
        elif ftype == GOAWAY and self.transport is not None:
            self.transport.close()

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == 4:
                for st in self.streams.values():
                    st.window += value - self.peer_window
                self.peer_window = value
            elif key == 5:
                self.max_frame = value
        self.send(frame(SETTINGS, ACK, 0))
        for st in list(self.streams.values()):
            self.flush(st)

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        headers = self.header_cache.get(block)
        if headers is None:
            headers = {str(k): str(v) for k, v in self.decoder.decode(block)}
            # Only indexed fields (one byte each) leave the dynamic table as it was.
            if block and min(block) >= 0x80 and 0xFF not in block:
                self.header_cache[block] = headers
            else:
                self.header_cache.clear()
        st = self.streams.get(sid)
        if st is None:
            if sid % 2 == 0:
                self._fail(1)
                return
            if sid <= self.last_sid:  # a stream we already ended or reset
                return
            self.last_sid = sid
            st = self.streams[sid] = Stream(self, sid, headers)
            if self.server.closing:
                self._reject(st, grpc.StatusCode.UNAVAILABLE, "server is shutting down")
                return
        if flags & END_STREAM and st.task is None:
            self._dispatch(st)

    def _reject(self, st: Stream, code: grpc.StatusCode, details: str) -> None:
        st.finish(code, details)
        self.send(frame(RST_STREAM, 0, st.sid, b"\x00\x00\x00\x00"))
        self._drop(st)

    def _drop(self, st: Stream) -> None:
        st.closed = True
        self.streams.pop(st.sid, None)
        if st.task is not None and not st.task.done():
            st.task.cancel()
        if st.drained is not None and not st.drained.done():
            st.drained.set_result(None)

    def flush(self, st: Stream) -> bool:
        """Send what the windows allow; the trailers go once all data is out."""
        out = st.out
        while out and self.window > 0 and st.window > 0:
            n = min(len(out), self.window, st.window, self.max_frame)
            self.send(frame(DATA, 0, st.sid, bytes(out[:n])))
            del out[:n]
            self.window -= n
            st.window -= n
        if out:
            return False
        if st.drained is not None and not st.drained.done():
            st.drained.set_result(None)
        if st.trailers is not None and not st.closed:
            self.send(frame(HEADERS, END_HEADERS | END_STREAM, st.sid, st.trailers))
            st.closed = True
            self.streams.pop(st.sid, None)
        return True

    def _dispatch(self, st: Stream) -> None:
        handler = self.server.handlers.get(st.headers.get(":path", ""))
        if handler is None:
            self._reject(st, grpc.StatusCode.UNIMPLEMENTED,
                         f"Method not found: {st.headers.get(':path', '')}")
            return
        body = b"".join(st.body)
        st.body.clear()
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._reject(st, grpc.StatusCode.INTERNAL, "expected one uncompressed message")
            return
        try:
            parse = handler.request_deserializer
            request = parse(body[5:]) if parse else body[5:]
        except Exception as exc:
            self._reject(st, grpc.StatusCode.INTERNAL, f"cannot parse request: {exc}")
            return
        ctx = Context(st.headers)
        loop = asyncio.get_running_loop()
        if handler.unary_unary is not None and st.headers[":path"] in self.server.eager:
            # Run to the first await here: a task costs a loop turn. Only for handlers that need
            # no current_task() before their first await (sniffio, asyncio.timeout do).
            run = contextvars.copy_context()
            coro = handler.unary_unary(request, ctx)
            try:
                pending = run.run(coro.send, None)
            except StopIteration as done:
                self._reply(st, ctx, handler, done.value)
                return
            except BaseException as exc:  # noqa: B902 - every outcome is a status
                fail_call(st, ctx, exc)
                return
            st.task = loop.create_task(run_unary(st, ctx, handler, resume(coro, pending)),
                                       context=run)
        elif handler.unary_unary is not None:
            st.task = loop.create_task(
                run_unary(st, ctx, handler, handler.unary_unary(request, ctx)))
        else:
            st.task = loop.create_task(run_stream(st, ctx, handler, request))
        self.server.watch(st, ctx)

    def _reply(self, st: Stream, ctx: Context, handler: Handler, response: Any) -> None:
        """Headers, message and trailers in one write."""
        nested, self.batching = self.batching, True
        try:
            if ctx.code() not in (None, grpc.StatusCode.OK):
                st.finish(ctx.code() or grpc.StatusCode.UNKNOWN, ctx.details() or "")
            else:
                st.message(serialize(handler, response))
                st.finish(grpc.StatusCode.OK, "")
        finally:
            if not nested:
                self._write_out()

    def _write_out(self) -> None:
        self.batching = False
        if self.out and self.transport is not None:
            self.transport.write(b"".join(self.out))
        self.out.clear()


class Server:
    """The grpc.aio.Server surface berthd uses: handlers, interceptors, a unix socket."""

    def __init__(self, interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
                 max_message: int = 4 << 20, eager: Iterable[str] = ()) -> None:
        self.interceptors = list(interceptors)
        self.eager = frozenset(eager)  # paths run up to their first await without a task
        self.max_message = max_message
        self.registered: dict[str, Handler] = {}
        self.handlers: dict[str, Handler] = {}
        self.conns: set[Connection] = set()
        self.closing = False
        self.paths: list[str] = []
        self.listeners: list[asyncio.Server] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        """The generated code also registers each method by name below, which is what we use."""

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.registered[f"/{service}/{name}"] = handler

    def add_insecure_port(self, address: str) -> int:
        if not address.startswith("unix://"):
            return 0
        self.paths.append(address.removeprefix("unix://"))
        return 1

    async def start(self) -> None:
        for path, handler in self.registered.items():
            for icpt in reversed(self.interceptors):
                async def cont(_: Any, h: Handler = handler) -> Handler:
                    return h
                handler = await icpt.intercept_service(cont, CallDetails(path))
            self.handlers[path] = handler
        loop = asyncio.get_running_loop()
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.listeners.append(await loop.create_unix_server(lambda: Connection(self), path))

    def watch(self, st: Stream, ctx: Context) -> None:
        """Calls with a deadline that outlive it end as DEADLINE_EXCEEDED, as grpcio does."""
        left = ctx.time_remaining()
        task = st.task
        if task is None or left is None:
            return

        def expire() -> None:
            if not task.done():
                ctx.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                ctx.set_details("Deadline Exceeded")
                task.cancel()
        handle = asyncio.get_running_loop().call_later(left, expire)
        task.add_done_callback(lambda _: handle.cancel())

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let running ones finish within grace, then cancel the rest."""
        self.closing = True
        for srv in self.listeners:
            srv.close()
        for conn in list(self.conns):
            conn.goaway()
        tasks = [st.task for c in self.conns for st in c.streams.values() if st.task]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
