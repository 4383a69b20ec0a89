"""Docker's hijacked connections (attach, exec start): HTTP 101 then raw bytes both ways.

The docker CLI and docker-py ask with `Connection: Upgrade` and `Upgrade: tcp`; aiohttp's parser
then hands every later byte of the connection to the parser we install, the way its WebSocket
support does, and we write raw bytes to the transport after the 101 headers.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
INPUT_LIMIT = 1 << 20  # unread output held per connection before the producer waits
# docker-py reads the 101 headers through a buffered reader and then the raw socket beneath it:
# bytes that arrive with the headers are lost to it. dockerd's exec start takes long enough
# that this never shows; ours does not, so the first bytes wait this long after the headers.
HEADER_GAP = 0.02


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed framing: stream id, three zero bytes, big-endian length, data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


class HijackableHandler(RequestHandler):
    """aiohttp's connection handler, except that a hijacked connection survives a half-close.

    asyncio closes a transport whose protocol's eof_received returns false, which is what
    aiohttp's does; a hijacked stream answers true so our side can still write.
    """

    __slots__ = ("on_eof",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_eof: Callable[[], bool] | None = None

    def eof_received(self) -> bool:  # type: ignore[override]
        return self.on_eof() if self.on_eof is not None else False


class _Input:
    """The parser aiohttp feeds the upgraded connection's bytes to: they are the stdin."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")


class Hijacked:
    """One hijacked connection: `read()` the client's bytes (b"" at EOF), `write()` ours."""

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 upgraded: bool) -> None:
        self.request, self.response, self.upgraded = request, response, upgraded
        self._input = _Input()
        self._quiet_until = time.monotonic() + HEADER_GAP if upgraded else 0.0
        if upgraded:
            request.protocol.set_parser(self._input)  # type: ignore[arg-type]
            # The CLI half-closes once its stdin ends (or at once without -i): that is EOF on
            # stdin, not a hang-up, so the transport must stay open for our output.
            if isinstance(request.protocol, HijackableHandler):
                request.protocol.on_eof = self._half_closed
        else:
            self._input.feed_eof()

    def _half_closed(self) -> bool:
        self._input.feed_eof()
        return True

    async def read(self) -> bytes:
        return await self._input.queue.get()

    async def write(self, data: bytes) -> bool:
        """False once the client has gone, so producers can stop."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return False
        if not self.upgraded:
            await self.response.write(data)
            return True
        if self._quiet_until:
            await asyncio.sleep(max(0.0, self._quiet_until - time.monotonic()))
            self._quiet_until = 0.0
            if transport.is_closing():
                return False
        transport.write(data)
        while transport.get_write_buffer_size() > INPUT_LIMIT and not transport.is_closing():
            await asyncio.sleep(0.01)  # the client reads slowly: hold the producer, not RAM
        return True

    def close(self) -> None:
        """Half-close like dockerd: the client sees EOF on its read side and ends."""
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
            transport.close()


async def hijack(request: web.Request, content_type: str) -> Hijacked:
    """Answer 101 UPGRADED when asked to (docker CLI, docker-py), else a 200 stream."""
    upgraded = request.headers.get("Upgrade", "").lower() == "tcp" and \
        "upgrade" in request.headers.get("Connection", "").lower()
    if upgraded:
        resp = web.StreamResponse(status=101, reason="UPGRADED",
                                  headers={"Content-Type": content_type,
                                           "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    await resp.prepare(request)
    request.protocol.keep_alive(False)
    return Hijacked(request, resp, upgraded)
