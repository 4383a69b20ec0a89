"""The k8s channel protocol over WebSocket: one leading byte names the channel (a digit
character in the base64 variants); v5 adds a CLOSE message to half-close a channel."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from cri.streaming.remotecommand import SessionIO, parse_sizes, status

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io",
                  "channel.k8s.io", "base64.channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io",
                         "portforward.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_MESSAGE = 1 << 20
INBOX = 16  # messages queued per input channel before we stop reading the socket


class Channels:
    """Encode/decode channel messages for the negotiated subprotocol."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.protocol = ws.ws_protocol or ""
        self.b64 = "base64" in self.protocol

    async def send(self, channel: int, data: bytes) -> None:
        """Dropped once the client is gone."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            if self.b64:
                await self.ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
            else:
                await self.ws.send_bytes(bytes([channel]) + data)

    async def messages(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, payload) until the client closes."""
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                yield msg.data[0], msg.data[1:]
            elif msg.type == WSMsgType.TEXT and msg.data and self.b64:
                with contextlib.suppress(binascii.Error, ValueError):
                    yield ord(msg.data[0]) - ord("0"), base64.b64decode(msg.data[1:])


class WsIO(SessionIO):
    """Exec/attach over one WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, stdout: bool, stderr: bool) -> None:
        self.ch = Channels(ws)
        self.protocol = self.ch.protocol
        self.want = {"stdout": stdout, "stderr": stderr}
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue(INBOX)
        self._resize: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue(INBOX)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        buf = bytearray()
        try:
            async for channel, data in self.ch.messages():
                if channel == STDIN and data:
                    await self._stdin.put(data)
                elif channel == RESIZE:
                    buf += data
                    for size in parse_sizes(buf):
                        await self._resize.put(size)
                elif channel == CLOSE and self.protocol.startswith("v5.") and data[:1] == b"\0":
                    await self._stdin.put(b"")
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._stdin.put_nowait(b"")
                self._resize.put_nowait(None)

    async def start(self) -> None:
        """An empty message on the lowest output channel tells the client we are ready."""
        first = STDOUT if self.want["stdout"] else STDERR if self.want["stderr"] else ERROR
        await self.ch.send(first, b"")

    async def read_stdin(self) -> bytes:
        return await self._stdin.get()

    async def write(self, kind: str, data: bytes) -> None:
        if self.want.get(kind):
            await self.ch.send(STDOUT if kind == "stdout" else STDERR, data)

    async def resizes(self) -> AsyncIterator[tuple[int, int]]:
        while (size := await self._resize.get()) is not None:
            yield size

    async def finish(self, exit_code: int | None, error: str) -> None:
        msg = status(self.protocol, exit_code, error)
        if msg:
            await self.ch.send(ERROR, msg)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ch.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def gone(self) -> None:
        await asyncio.shield(self._reader)
