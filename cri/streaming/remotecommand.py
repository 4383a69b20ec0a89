"""Exec and attach sessions: pump a monitor StreamSession to and from a client transport,
and report how it ended in the form the negotiated protocol expects."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from cri.streaming.spdyconn import Connection, Stream
from runtime.containers import MonitorError, StreamSession

SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
STREAM_WAIT = 30.0  # kubelet's stream creation timeout
MAX_RESIZE_BUF = 4096
LOST = ("the exec's exit status is unknown: its session with the berth monitor broke and the "
        "monitor does not know it (it went away, and the container with it)")


def status(protocol: str, exit_code: int | None, error: str) -> bytes:
    """v4+: a metav1.Status as JSON; before v4 only a failure message (nothing on success)."""
    if error:
        st: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": error,
                              "reason": "InternalError", "code": 500,
                              "details": {"causes": [{"message": error}]}}
    elif not exit_code:
        st = {"metadata": {}, "status": "Success"}
    else:
        st = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
              "message": f"command terminated with non-zero exit code: exit code {exit_code}",
              "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
    if protocol.startswith(("v4.", "v5.")):
        return json.dumps(st).encode()
    return str(st.get("message", "")).encode()


def parse_sizes(buf: bytearray) -> list[tuple[int, int]]:
    """Complete {"Width":..,"Height":..} objects at the front of buf (consumed from it)."""
    text, pos, out = buf.decode(errors="replace"), 0, []
    dec = json.JSONDecoder()
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if isinstance(obj, dict):
            out.append((int(obj.get("Width", 0)), int(obj.get("Height", 0))))
    rest = text[pos:].encode()
    buf[:] = b"" if len(rest) > MAX_RESIZE_BUF else rest
    return out


class SessionIO(abc.ABC):
    """The client side of one exec/attach, whatever the transport."""

    protocol: str = ""

    @abc.abstractmethod
    async def read_stdin(self) -> bytes:
        """Next stdin chunk; b"" at EOF (or when the client sends no stdin)."""

    @abc.abstractmethod
    async def write(self, kind: str, data: bytes) -> None:
        """Output for "stdout"/"stderr"; dropped if the client did not ask for that stream."""

    @abc.abstractmethod
    def resizes(self) -> AsyncIterator[tuple[int, int]]:
        """Terminal size changes from the client."""

    @abc.abstractmethod
    async def finish(self, exit_code: int | None, error: str) -> None:
        """Report the outcome and close the transport."""

    @abc.abstractmethod
    async def gone(self) -> None:
        """Returns once the client disconnected."""


async def run_session(io: SessionIO, start: Callable[[], Awaitable[StreamSession]],
                      want_stdin: bool,
                      exit_of: Callable[[StreamSession], Awaitable[int | None]] | None) -> None:
    """Until the process (or container) ends or the client leaves; nothing outlives it.
    Attach (no `exit_of`) reports success when the container exits, whatever its code (as
    kubelet does). An exec whose exit nobody can learn is a failure, never a success: like
    containerd when it cannot wait for the process."""
    try:
        session = await start()
    except (MonitorError, ConnectionError, OSError) as exc:
        await io.finish(None, str(exc))
        return

    async def output() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, MonitorError):
            while (msg := await session.recv()) is not None:
                await io.write(*msg)

    async def stdin() -> None:
        while data := await io.read_stdin():
            await session.send_stdin(data)
        await session.close_stdin()

    async def resize() -> None:
        async for w, h in io.resizes():
            await session.resize(w, h)

    out = asyncio.ensure_future(output())
    gone = asyncio.ensure_future(io.gone())
    helpers = [asyncio.ensure_future(resize())]
    if want_stdin:
        helpers.append(asyncio.ensure_future(stdin()))
    try:
        await asyncio.wait({out, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (out, gone, *helpers):
            t.cancel()
        await asyncio.gather(out, gone, *helpers, return_exceptions=True)
        session.close()
    if exit_of is None:
        await io.finish(None, "")  # a no-op write if the client already left
    elif (code := await exit_of(session)) is None:
        await io.finish(None, LOST)
    else:
        await io.finish(code, "")


class SpdyIO(SessionIO):
    """Streams named by their `streamtype` header on one SPDY session."""

    def __init__(self, conn: Connection, protocol: str, expected: set[str]) -> None:
        self.conn, self.protocol, self.expected = conn, protocol, expected
        self.streams: dict[str, Stream] = {}
        self.ready = asyncio.Event()

    def on_stream(self, st: Stream) -> bool:
        kind = st.header("streamtype")
        if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in self.streams:
            return False
        self.streams[kind] = st
        if self.expected <= self.streams.keys():
            self.ready.set()
        return True

    async def wait_streams(self) -> bool:
        """True once every expected stream was created by the client."""
        waits = {asyncio.ensure_future(self.ready.wait()),
                 asyncio.ensure_future(self.conn.closed.wait())}
        await asyncio.wait(waits, timeout=STREAM_WAIT, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return self.ready.is_set() and not self.conn.closed.is_set()

    async def read_stdin(self) -> bytes:
        st = self.streams.get("stdin")
        return await st.read() if st else b""

    async def write(self, kind: str, data: bytes) -> None:
        if (st := self.streams.get(kind)) is not None:
            await st.write(data)

    async def resizes(self) -> AsyncIterator[tuple[int, int]]:
        st = self.streams.get("resize")
        if st is None:
            return
        buf = bytearray()
        while chunk := await st.read():
            buf += chunk
            for size in parse_sizes(buf):
                yield size

    async def finish(self, exit_code: int | None, error: str) -> None:
        msg = status(self.protocol, exit_code, error)
        if (err := self.streams.get("error")) is not None and msg:
            await err.write(msg)
        await self.conn.aclose()

    async def gone(self) -> None:
        await self.conn.closed.wait()
