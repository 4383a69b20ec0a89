"""One connection of the CRI socket: python-hyper's h2 runs the HTTP/2 state machine; this
class adds the limits h2 leaves to its user and runs each call (to its first wait right where
its request completes, as a task after that: cri/eagerstep.py).

h2 validates frames, settings and headers (a bad one is its GOAWAY), enforces the advertised
MAX_CONCURRENT_STREAMS and caps CONTINUATION frames. It keeps no limit on work: a client that
never reads, pings or resets without end is ours to stop, so here are write back-pressure
(reading pauses while replies wait), grpc-go's ping policy, a rapid-reset budget, a bound on
request bytes buffered per connection and a handshake timeout (docs/transport.md; the limits
and the abuse counters are in cri/h2policy.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import structlog
from h2.events import DataReceived, Event

from cri import eagerstep
from cri.grpccall import (
    CallError,
    Method,
    RpcContext,
    framed,
    message_length,
    request_of,
    timeout_of,
    trailers,
)
from cri.h2policy import CallBudget, Limits, Strikes

log = structlog.get_logger("cri.transport")

# Headers stay bytes: a value that is not UTF-8 is the call's problem, not an exception in h2.
_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                    validate_inbound_headers=True,
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
_GRPC_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
_OK = trailers(grpc.StatusCode.OK, "")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


class CriConnection(asyncio.Protocol):
    """An h2 connection serving gRPC calls from a method table."""

    def __init__(self, table: dict[str, Method], limits: Limits, budget: CallBudget,
                 on_close: Callable[[CriConnection], None]) -> None:
        self.table, self.limits, self.budget, self.on_close = table, limits, budget, on_close
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.calls: dict[int, asyncio.Task[None]] = {}  # calls that waited (cri/eagerstep.py)
        self.stepping: int | None = None  # the call taking its first step
        self.deadlines: dict[int, asyncio.TimerHandle] = {}
        self.expired: set[int] = set()
        self.pending: dict[int, tuple[Method, float | None, bytearray]] = {}
        self.buffered = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.window = asyncio.Event()
        self.greeted = False
        self.strikes = Strikes(limits)
        self.timers: list[asyncio.TimerHandle] = []

    @functools.cached_property
    def h2(self) -> h2.connection.H2Connection:
        """Made when the client first speaks: a connection that never does (1,000 idle ones in
        tests/transport) costs no h2 state (~15 KB each)."""
        conn = h2.connection.H2Connection(_CONFIG)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list,
        })
        # h2 applies a MAX_HEADER_LIST_SIZE to its HPACK decoder only when the client ACKs a
        # change; the initial value is ours from the first frame on.
        conn.decoder.max_header_list_size = self.limits.max_header_list
        conn.initiate_connection()
        return conn

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.closed:  # refused by the server's connection limit
            transport.abort()
            return
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        loop = asyncio.get_running_loop()
        self.timers = [loop.call_later(self.limits.handshake_timeout, self._handshake_expired),
                       loop.call_later(self.limits.keepalive_time, self._keepalive)]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
            for event in events:
                if self.closed:
                    return
                self._event(event)
        except h2.exceptions.ProtocolError as exc:  # h2 queued the GOAWAY
            log.debug("connection error", error=str(exc))
            self._close()
            return
        except Exception as exc:  # a defect of ours: this connection ends, the daemon does not
            log.warning("connection failed", error=repr(exc))
            self._close()
            return
        self._flush()

    def pause_writing(self) -> None:
        """The peer is not reading: stop reading its requests (and pings, settings) too."""
        assert self.transport is not None
        self.writable.clear()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.writable.set()
        if not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in self.timers:
            timer.cancel()
        for task in self.calls.values():
            task.cancel()
        for timer in self.deadlines.values():
            timer.cancel()
        self.pending.clear()
        self.writable.set()  # senders wake, see `closed` and end
        self.window.set()
        self.on_close(self)

    # HTTP/2 events

    def _event(self, event: Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, dict(event.headers or ()))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._start(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._reset(event.stream_id)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.greeted = True
            self.window.set()
        elif isinstance(event, h2.events.PingReceived):
            why = self.strikes.ping()
            if why:
                self._calm(why)
        elif isinstance(event, h2.events.PingAckReceived):
            self.timers[1].cancel()
            self.timers[1] = asyncio.get_running_loop().call_later(self.limits.keepalive_time,
                                                                   self._keepalive)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _request(self, sid: int, headers: dict[bytes, bytes]) -> None:
        """Headers stay bytes (h2 hands them so): only the few a call reads are decoded."""
        content_type = headers.get(b"content-type", b"")
        if headers.get(b":method") != b"POST" or not content_type.startswith(b"application/grpc"):
            self._not_grpc(sid, _text(headers.get(b"content-type")))
            return
        path = headers.get(b":path", b"").decode("utf-8", "replace")
        method = self.table.get(path)
        try:
            if method is None:
                raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path[:200]!r}")
            timeout = timeout_of(_text(headers.get(b"grpc-timeout")))
        except CallError as exc:
            self._refuse(sid, exc)
            return
        self.pending[sid] = (method, timeout, bytearray())

    def _data(self, event: DataReceived) -> None:
        sid, data = event.stream_id, event.data or b""
        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, sid)
        entry = self.pending.get(sid)
        if entry is None:  # answered already (an early error) or a call in progress
            return
        body = entry[2]
        before = len(body)
        body += data
        self.buffered += len(body) - before
        try:
            if before < 5 <= len(body):
                message_length(body[:5], self.limits.max_receive)
            if len(body) > self.limits.max_receive + 5:
                raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, "more than one message")
            if self.buffered > self.limits.buffered_per_connection:
                raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many request bytes "
                                "buffered on this connection")
        except CallError as exc:
            self._drop(sid)
            self._refuse(sid, exc)

    def _start(self, sid: int) -> None:
        entry = self._drop(sid)
        if entry is None:
            return
        method, timeout, body = entry
        try:
            request = request_of(method, body, self.limits.max_receive)
            if self.budget.count >= self.budget.limit:
                raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"more than {self.budget.limit} calls in flight")
        except CallError as exc:
            self._refuse(sid, exc)
            return
        self.budget.count += 1
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        task = None
        self.stepping = sid
        try:  # a call that does not wait is answered here, with no task (cri/eagerstep.py)
            call = self._run(sid, method, request)
            task = eagerstep.start(call) if method.eager else loop.create_task(call)
        finally:
            self.stepping = None
            if task is None:
                self.budget.count -= 1
        if task is None:
            return
        self.calls[sid] = task
        task.add_done_callback(functools.partial(self._release, sid))
        if deadline is not None:
            self.deadlines[sid] = loop.call_at(deadline, self._expire, sid)

    def _release(self, sid: int, _: asyncio.Task[None]) -> None:
        """A done callback, not a `finally`: a task cancelled before its next step (a reset
        in the same read as the request) never runs the rest of its body."""
        self.budget.count -= 1
        timer = self.deadlines.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, sid: int) -> None:
        """grpc-timeout passed: the call's task is cancelled and answers DEADLINE_EXCEEDED."""
        task = self.calls.get(sid)
        if task is not None:
            self.expired.add(sid)
            task.cancel()

    def _drop(self, sid: int) -> tuple[Method, float | None, bytearray] | None:
        entry = self.pending.pop(sid, None)
        if entry is not None:
            self.buffered -= len(entry[2])
        return entry

    def _reset(self, sid: int) -> None:
        """The stream's call ends; too many resets end the connection (cri/h2policy.py)."""
        self._drop(sid)
        task = self.calls.pop(sid, None)
        if task is not None:
            task.cancel()
        why = self.strikes.reset()
        if why:
            self._calm(why)

    def _calm(self, why: str) -> None:
        log.warning("connection closed", reason=why)
        self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                 additional_data=why.encode())
        self._close()

    # Replies

    def _not_grpc(self, sid: int, content_type: str | None) -> None:
        """grpc-go's answer to a request that is not gRPC: HTTP 415 with a reason in the body
        (sent under flow control like any reply)."""
        self.h2.send_headers(sid, [(":status", "415"), ("content-type", "text/plain")])
        body = f"invalid gRPC request content-type {content_type!r}\n".encode()
        self.calls[sid] = asyncio.create_task(self._body(sid, body[:256]))

    async def _body(self, sid: int, body: bytes) -> None:
        try:
            await self._send(sid, body)
            self.h2.send_data(sid, b"", end_stream=True)
            self.strikes.reply()
            self._flush()
        except (h2.exceptions.StreamClosedError, ConnectionError):
            return
        finally:
            self.calls.pop(sid, None)

    def _refuse(self, sid: int, exc: CallError) -> None:
        """A trailers-only reply to a call that never reached its handler. A client still
        sending keeps its half of the stream (and its stream slot) until it ends or resets it."""
        self.h2.send_headers(sid, _GRPC_HEADERS + trailers(exc.code, exc.details),
                             end_stream=True)
        self.strikes.reply()

    async def _run(self, sid: int, method: Method, request: object) -> None:
        context = RpcContext()
        started = False
        status: CallError | None = None  # None: OK
        try:
            try:
                if method.streaming:
                    async for reply in method.handler(request, context):
                        started = self._start_reply(sid, started)
                        await self._send(sid, framed(reply, self.limits.max_send))
                        self._flush()
                else:
                    reply = framed(await method.handler(request, context), self.limits.max_send)
                    started = self._start_reply(sid, started)
                    await self._send(sid, reply)
            except CallError as exc:
                status = exc
            except asyncio.CancelledError:
                if sid not in self.expired:  # reset, lost connection or server stop
                    raise
                status = CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            except Exception as exc:  # the interceptor turns handler errors into statuses first
                log.exception("call failed", method=method.name)
                status = CallError(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
            if self.closed or (sid not in self.calls and sid != self.stepping):
                return  # reset
            if not started:
                self._refuse(sid, status or CallError(grpc.StatusCode.OK, ""))
            else:
                self.h2.send_headers(sid, _OK if status is None else
                                     trailers(status.code, status.details), end_stream=True)
                self.strikes.reply()
            self._flush()
        except (h2.exceptions.StreamClosedError, ConnectionError):
            return  # the client went away mid-reply
        finally:
            self.calls.pop(sid, None)
            self.expired.discard(sid)

    def _start_reply(self, sid: int, started: bool) -> bool:
        if not started:
            self.h2.send_headers(sid, _GRPC_HEADERS)
        return True

    async def _send(self, sid: int, data: bytes) -> None:
        """Bytes under both flow-control windows and the socket's back-pressure. The last frame
        is left to the caller to write: a small unary reply's headers, message and trailers go
        out in one write."""
        view = memoryview(data)
        while view:
            if not self.writable.is_set():
                self._flush()
                await self.writable.wait()
            if self.closed:
                raise ConnectionError("connection closed")
            size = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if size <= 0:
                self._flush()
                self.window.clear()
                await self.window.wait()
                continue
            self.h2.send_data(sid, view[:size].tobytes())
            view = view[size:]
            if view:  # a large reply goes out frame by frame, never whole into h2's buffer
                self._flush()
        self.strikes.sent()

    # Connection upkeep

    def _flush(self) -> None:
        if "h2" not in self.__dict__:  # the client never spoke
            return
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        """Flush what h2 queued (a GOAWAY) and close; a peer that does not read loses it."""
        self._flush()
        self.closed = True
        if self.transport is not None:
            if self.writable.is_set():
                self.transport.close()
            else:
                self.transport.abort()

    def goaway(self) -> None:
        """Server stop: no new calls (GOAWAY NO_ERROR); the calls in flight may finish."""
        if not self.closed and self.greeted:
            self.h2.close_connection(h2.errors.ErrorCodes.NO_ERROR,
                                     last_stream_id=self.h2.highest_inbound_stream_id)
            self._flush()

    def abort(self) -> None:
        if not self.closed:
            self._close()

    def _handshake_expired(self) -> None:
        if not self.greeted:
            self._close()

    def _keepalive(self) -> None:
        """Ping an idle connection; no ACK within the timeout means a hung peer."""
        if self.closed:
            return
        self.h2.ping(b"berthka!")
        self._flush()
        self.timers[1] = asyncio.get_running_loop().call_later(self.limits.keepalive_timeout,
                                                               self._close)
