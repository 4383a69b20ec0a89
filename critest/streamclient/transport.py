"""Client ends of the two transports kubelet uses: a SPDY/3.1 upgrade and a WebSocket."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from critest.streamclient.spdy3 import SpdySession

MAX_RESPONSE_HEAD = 16 << 10


@dataclass
class SpdyLink:
    """An upgraded connection: the SPDY session and the subprotocol the server chose."""

    conn: SpdySession
    protocol: str

    async def aclose(self) -> None:
        await self.conn.aclose()


async def spdy_connect(url: str, protocols: list[str], timeout: float = 10.0) -> SpdyLink:
    """HTTP/1.1 upgrade to SPDY/3.1 offering `protocols` in X-Stream-Protocol-Version."""
    u = urlsplit(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(u.hostname, u.port or 80), timeout)
    path = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {u.netloc}", "Connection: Upgrade",
             "Upgrade: SPDY/3.1", "Content-Length: 0"]
    lines += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        raise ConnectionError(f"no upgrade response from {url}: {exc}") from None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if " 101 " not in status_line + " ":
        writer.close()
        raise ConnectionError(f"upgrade refused: {status_line}")
    chosen = ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-stream-protocol-version":
            chosen = value.strip()
    return SpdyLink(SpdySession(reader, writer), chosen)


@dataclass
class WsLink:
    """A WebSocket with the subprotocol the server chose."""

    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    protocol: str

    async def aclose(self) -> None:
        await self.ws.close()
        await self.session.close()


async def ws_connect(url: str, protocols: list[str], timeout: float = 10.0) -> WsLink:
    """Upgrade to WebSocket offering `protocols` (Sec-WebSocket-Protocol), in order."""
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(url.replace("http://", "ws://", 1), protocols=protocols,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                                      max_msg_size=4 << 20, autoping=True)
    except BaseException:
        await session.close()
        raise
    return WsLink(session, ws, ws.protocol or "")
