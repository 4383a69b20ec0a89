"""A gRPC call over HTTP/2 apart from its connection: the frames and header blocks we send, the
call's context, and the coroutines that run a handler and report its status."""

from __future__ import annotations

import asyncio
import struct
import time
import types
from collections.abc import Awaitable, Coroutine, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn
from urllib.parse import quote

import grpc

if TYPE_CHECKING:
    from cri.h2grpc import Stream

Handler = Any  # grpc.RpcMethodHandler
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
CONTINUATION = 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 1, 1, 4, 8, 0x20
MAX_WINDOW = 0x7FFFFFFF
FRAME = struct.Struct(">IBI")  # length << 8 | type, flags, stream id
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return FRAME.pack(len(payload) << 8 | ftype, flags, sid) + payload


def _hint(value: int, prefix: int) -> bytes:
    """HPACK integer with a zero first byte pattern."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes([value])
    out, value = [top], value - top
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def literal(name: str, value: str) -> bytes:
    """Literal never added to the table, so encoded headers need no encoder state."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hint(len(n), 7) + n + _hint(len(v), 7) + v


RESPONSE_HEADERS = b"\x88" + literal("content-type", "application/grpc")  # 0x88: :status 200
SERVER_HELLO = (frame(SETTINGS, 0, 0, struct.pack(">HIHI", 3, 1000, 4, MAX_WINDOW))
                + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535)))


def status_block(code: grpc.StatusCode, details: str) -> bytes:
    block = literal("grpc-status", str(code.value[0]))
    if details:
        block += literal("grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"))
    return block


class Abort(grpc.aio.AbortError):
    """Raised by abort(); the status was already set on the context."""


class CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class Context:
    """The part of grpc.aio.ServicerContext that berth's servicers and interceptor use."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        timeout = headers.get("grpc-timeout")
        self._deadline = (time.monotonic() + int(timeout[:-1]) * TIMEOUT_UNITS[timeout[-1]]
                          if timeout and timeout[-1] in TIMEOUT_UNITS and timeout[:-1].isdigit()
                          else None)

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str]] = ()) -> NoReturn:
        self._code, self._details = code, details
        raise Abort()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Hand a coroutine that already ran to its first await over to a task."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # noqa: B902 - cancellation must reach the handler
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value


def serialize(handler: Handler, message: Any) -> bytes:
    return handler.response_serializer(message) if handler.response_serializer else message


def fail_call(st: Stream, ctx: Context, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        if st.reset or st.closed:
            return
        ctx.set_code(ctx.code() or grpc.StatusCode.CANCELLED)
    code = ctx.code()
    if code is None or code is grpc.StatusCode.OK:
        st.finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")
    else:
        st.finish(code, ctx.details() or "")
    if not isinstance(exc, Exception | asyncio.CancelledError):
        raise exc


async def run_unary(st: Stream, ctx: Context, handler: Handler, call: Awaitable[Any]) -> None:
    try:
        response = await call
    except BaseException as exc:  # noqa: B902
        fail_call(st, ctx, exc)
    else:
        st.conn._reply(st, ctx, handler, response)


async def run_stream(st: Stream, ctx: Context, handler: Handler, request: Any) -> None:
    try:
        async for item in handler.unary_stream(request, ctx):
            if not st.message(serialize(handler, item)) and not st.closed:
                st.drained = asyncio.get_running_loop().create_future()
                await st.drained
            if st.closed:
                return
    except BaseException as exc:  # noqa: B902
        fail_call(st, ctx, exc)
    else:
        st.finish(ctx.code() or grpc.StatusCode.OK, ctx.details() or "")
