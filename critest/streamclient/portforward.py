"""Port-forward client: SPDY portforward.k8s.io (error+data stream pair per connection) and
the WebSocket channel variant (channels 2i/2i+1 per requested port)."""

from __future__ import annotations

import asyncio
import itertools
import struct

import aiohttp

from critest.streamclient.transport import SpdyLink, spdy_connect, ws_connect

PROTOCOL = "portforward.k8s.io"


async def _read_all(read: object, timeout: float) -> bytes:
    out = bytearray()

    async def loop() -> None:
        while chunk := await read():  # type: ignore[operator]
            out.extend(chunk)

    await asyncio.wait_for(loop(), timeout)
    return bytes(out)


class SpdyPortForward:
    """One upgraded session; each request() is one forwarded TCP connection."""

    def __init__(self, link: SpdyLink) -> None:
        self.link = link
        self._ids = itertools.count()

    @classmethod
    async def connect(cls, url: str) -> SpdyPortForward:
        link = await spdy_connect(url, [PROTOCOL])
        if link.protocol != PROTOCOL:
            await link.aclose()
            raise ConnectionError(f"server chose {link.protocol!r}")
        return cls(link)

    async def request(self, port: int, payload: bytes, timeout: float = 10.0
                      ) -> tuple[bytes, str]:
        """Send payload on a new connection to port; (everything it answered, error text)."""
        rid = str(next(self._ids))
        head = {"port": [str(port)], "requestid": [rid]}
        err = await self.link.conn.open_stream({"streamtype": ["error"], **head})
        await err.close()
        data = await self.link.conn.open_stream({"streamtype": ["data"], **head})
        await data.write(payload)
        answer = await _read_all(data.read, timeout)
        error = await _read_all(err.read, timeout)
        await data.close()
        return answer, error.decode(errors="replace")

    async def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        """Probe port with payload-free connections until one is forwarded without an error.

        Never send a payload to a port that may not listen yet: containerd's SPDY server
        (spdystream) hands each DATA frame to the stream's reader on one of five per-session
        frame workers and blocks until it is read. When the forward's dial fails nobody reads
        it, and the FIN or RST that would free it queue behind it on the same worker, so every
        later SYN_STREAM that maps to that worker waits for a SYN_REPLY that never comes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rid = str(next(self._ids))
            head = {"port": [str(port)], "requestid": [rid]}
            err = await self.link.conn.open_stream({"streamtype": ["error"], **head})
            await err.close()
            data = await self.link.conn.open_stream({"streamtype": ["data"], **head})
            await data.close()  # no payload: the forward ends as soon as it has dialled
            await _read_all(data.read, 10.0)
            if not (error := await _read_all(err.read, 10.0)):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"port {port} never listened: {error.decode(errors='replace')}")
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        await self.link.aclose()


async def ws_request(url: str, port: int, payload: bytes, timeout: float = 10.0
                     ) -> tuple[bytes, str]:
    """One port over WebSocket: the first message of each channel is the port number."""
    sep = "&" if "?" in url else "?"
    link = await ws_connect(f"{url}{sep}port={port}", ["v4.channel.k8s.io"])
    data, error = bytearray(), bytearray()
    seen: set[int] = set()
    try:
        await link.ws.send_bytes(b"\x00" + payload)

        async def pump() -> None:
            async for msg in link.ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                ch, body = msg.data[0], msg.data[1:]
                if ch not in seen:
                    seen.add(ch)
                    if body[:2] != struct.pack("<H", port):
                        raise ConnectionError(f"channel {ch} opened with {body[:2]!r}")
                    body = body[2:]
                (data if ch == 0 else error).extend(body)

        await asyncio.wait_for(pump(), timeout)
    finally:
        await link.aclose()
    return bytes(data), error.decode(errors="replace")
