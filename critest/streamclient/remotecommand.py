"""Exec/attach client for both transports, as kubectl and crictl drive them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from critest.streamclient.transport import SpdyLink, WsLink, spdy_connect, ws_connect

SPDY_PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io"]
WS_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass
class Outcome:
    """What the session produced; exit_code is None when the server sent no code."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None
    error: str
    protocol: str
    status: dict[str, Any] | None = None


def decode_error(raw: bytes, protocol: str) -> tuple[int | None, str, dict[str, Any] | None]:
    """v4+ sends a metav1.Status; older protocols a bare message (empty on success)."""
    if protocol.startswith(("v4.", "v5.")):
        if not raw.strip():
            return None, "", None
        st = json.loads(raw)
        if st.get("status") == "Success":
            return 0, "", st
        if st.get("reason") == "NonZeroExitCode":
            for cause in (st.get("details") or {}).get("causes") or []:
                if cause.get("reason") == "ExitCode":
                    return int(cause["message"]), st.get("message", ""), st
        return None, st.get("message", ""), st
    text = raw.decode(errors="replace")
    return (0 if not text else None), text, None


@dataclass
class Session:
    """An open exec/attach: feed stdin, resize, watch output, then wait for the outcome."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    error: bytearray = field(default_factory=bytearray)
    protocol: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _got(self, buf: bytearray, data: bytes) -> None:
        buf += data
        self.changed.set()

    async def read_until(self, needle: bytes, timeout: float = 10.0, err: bool = False) -> bytes:
        """Wait until stdout (or stderr) contains needle; returns everything so far."""
        buf = self.stderr if err else self.stdout

        async def watch() -> None:
            while needle not in buf:
                if self.done.is_set():
                    raise EOFError(f"session ended before {needle!r}: {bytes(buf)!r}")
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(watch(), timeout)
        return bytes(buf)

    async def wait(self, timeout: float = 30.0) -> Outcome:
        await asyncio.wait_for(self.done.wait(), timeout)
        code, msg, st = decode_error(bytes(self.error), self.protocol)
        return Outcome(bytes(self.stdout), bytes(self.stderr), code, msg, self.protocol, st)

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close_stdin(self) -> None:
        raise NotImplementedError

    async def resize(self, width: int, height: int) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


@dataclass
class SpdySession(Session):
    link: SpdyLink | None = None
    streams: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def send(self, data: bytes) -> None:
        await self.streams["stdin"].write(data)

    async def close_stdin(self) -> None:
        await self.streams["stdin"].close()

    async def resize(self, width: int, height: int) -> None:
        await self.streams["resize"].write(json.dumps({"Width": width, "Height": height}).encode())

    async def aclose(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.link is not None:
            await self.link.aclose()


async def open_spdy(url: str, *, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                    tty: bool = False, protocols: list[str] | None = None) -> SpdySession:
    """Upgrade, then create the streams in client-go's order: error first."""
    link = await spdy_connect(url, protocols or SPDY_PROTOCOLS)
    s = SpdySession(protocol=link.protocol, link=link)
    wanted = ["error"] + [n for n, on in (("stdin", stdin), ("stdout", stdout),
                                         ("stderr", stderr and not tty)) if on]
    if tty and link.protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
        wanted.append("resize")
    try:
        for kind in wanted:
            s.streams[kind] = await link.conn.open_stream({"streamtype": [kind]})
    except BaseException:
        await link.aclose()
        raise
    await s.streams["error"].close()
    bufs = {"stdout": s.stdout, "stderr": s.stderr, "error": s.error}
    readers = [k for k in ("stdout", "stderr", "error") if k in s.streams]

    async def drain(kind: str) -> None:
        while chunk := await s.streams[kind].read():
            s._got(bufs[kind], chunk)

    async def until_done() -> None:
        await asyncio.gather(*(drain(k) for k in readers), return_exceptions=True)
        s.done.set()
        s.changed.set()

    s.tasks.append(asyncio.get_running_loop().create_task(until_done()))
    return s


@dataclass
class WsSession(Session):
    link: WsLink | None = None
    b64: bool = False
    task: asyncio.Task[None] | None = None

    async def _put(self, channel: int, data: bytes) -> None:
        assert self.link is not None
        if self.b64:
            await self.link.ws.send_str(str(channel) + base64.b64encode(data).decode())
        else:
            await self.link.ws.send_bytes(bytes([channel]) + data)

    async def send(self, data: bytes) -> None:
        await self._put(STDIN, data)

    async def close_stdin(self) -> None:
        if not self.protocol.startswith("v5."):
            raise RuntimeError(f"{self.protocol or 'channel.k8s.io'} cannot half-close stdin")
        await self._put(CLOSE, bytes([STDIN]))

    async def resize(self, width: int, height: int) -> None:
        await self._put(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.link is not None:
            await self.link.aclose()


async def open_ws(url: str, protocols: list[str] | None = None) -> WsSession:
    """What is streamed was fixed by the Exec/Attach request; the URL carries only the token."""
    import aiohttp

    link = await ws_connect(url, protocols or WS_PROTOCOLS)
    s = WsSession(protocol=link.protocol, link=link, b64="base64" in link.protocol)
    bufs = {STDOUT: s.stdout, STDERR: s.stderr, ERROR: s.error}

    async def pump() -> None:
        try:
            async for msg in link.ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    raw = msg.data
                elif msg.type == aiohttp.WSMsgType.TEXT and s.b64:
                    raw = bytes([int(msg.data[0])]) + base64.b64decode(msg.data[1:])
                else:
                    continue
                if raw and raw[0] in bufs:
                    s._got(bufs[raw[0]], raw[1:])
        finally:
            s.done.set()
            s.changed.set()

    s.task = asyncio.get_running_loop().create_task(pump())
    return s


async def run(url: str, transport: str = "spdy", stdin_data: bytes | None = None,
              timeout: float = 30.0, **opts: Any) -> Outcome:
    """One whole non-interactive session: send stdin (then EOF), collect the outcome."""
    s: Session
    if transport == "spdy":
        s = await open_spdy(url, stdin=stdin_data is not None, **opts)
    else:
        s = await open_ws(url, **opts)
    try:
        if stdin_data is not None:
            await s.send(stdin_data)
            with contextlib.suppress(RuntimeError):
                await s.close_stdin()
        return await s.wait(timeout)
    finally:
        await s.aclose()
