"""berthd's streaming HTTP server: the URLs Exec/Attach/PortForward return land here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import hdrs, web

from cri.streaming import portforward, remotecommand
from cri.streaming.spdyconn import Connection
from cri.streaming.tokens import AttachJob, ExecJob, Job, PortForwardJob, TokenCache
from cri.streaming.wschannel import EXEC_PROTOCOLS, PORTFORWARD_PROTOCOLS, Channels, WsIO
from runtime.containers import MonitorClient, StreamSession

SHUTDOWN_GRACE = 2.0
LINGER = 2.0  # seconds a finished SPDY session waits for the client to close its side


class _SpdyParser:
    """aiohttp's hook for bytes after an accepted upgrade (the same one its WebSocket uses)."""

    def __init__(self, conn: Connection, client_eof: asyncio.Event) -> None:
        self.conn, self.client_eof = conn, client_eof

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.conn.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self.client_eof.set()
        self.conn.feed_eof()


def _negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The client's first choice we support; "" when it offered none (pre-versioning)."""
    if not offered:
        return ""
    return next((p for p in offered if p in supported), None)


class StreamingServer:
    """Tokens in, sessions out; stop() cancels whatever sessions are still running."""

    def __init__(self, monitor: MonitorClient, address: str, token_ttl: float) -> None:
        self.monitor = monitor
        self.address = address
        self.tokens = TokenCache(token_ttl)
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 10)
        for kind in ("exec", "attach", "portforward"):
            app.router.add_route("*", f"/{kind}/{{token}}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
        await self._runner.setup()
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        site = web.TCPSite(self._runner, host, int(port or 0))
        await site.start()
        server = cast(asyncio.Server, site._server)  # the bound port is only known here
        assert server is not None and server.sockets
        bound = server.sockets[0].getsockname()
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{bound[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, kind: str, job: Job) -> str:
        return f"{self.base_url}/{kind}/{self.tokens.put(job)}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.path.split("/")[1]
        job = self.tokens.consume(request.match_info["token"])
        expected = {"exec": ExecJob, "attach": AttachJob, "portforward": PortForwardJob}[kind]
        if job is None or not isinstance(job, expected):
            raise web.HTTPNotFound(text="unknown or expired streaming token\n")
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower()
        if upgrade == "websocket":
            return await self._websocket(request, job)
        if upgrade.startswith("spdy/3.1"):
            return await self._spdy(request, job)
        raise web.HTTPBadRequest(text="expected an Upgrade to SPDY/3.1 or websocket\n")

    async def _spdy(self, request: web.Request, job: Job) -> web.StreamResponse:
        supported = ((portforward.PROTOCOL,) if isinstance(job, PortForwardJob)
                     else remotecommand.SPDY_PROTOCOLS)
        offered = [p.strip() for v in request.headers.getall("X-Stream-Protocol-Version", [])
                   for p in v.split(",") if p.strip()]
        protocol = _negotiate(offered, supported)
        if protocol is None:
            raise web.HTTPForbidden(text=f"none of {offered} is supported: {supported}\n")
        resp = web.StreamResponse(status=101, headers={
            hdrs.CONNECTION: "Upgrade", hdrs.UPGRADE: "SPDY/3.1",
            "X-Stream-Protocol-Version": protocol})
        resp.force_close()
        writer = await resp.prepare(request)
        transport, proto = request.transport, request.protocol
        assert transport is not None and writer is not None

        def pause(on: bool) -> None:
            (transport.pause_reading if on else transport.resume_reading)()

        def half_close() -> None:
            """Our side is done: EOF after our last frame, but keep reading. A full close here
            would answer the client's late frames (a WINDOW_UPDATE for the output it just read)
            with a reset, and a reset makes the client's kernel drop our final frames (the exit
            status) before the client has read them."""
            if not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()

        client_eof = asyncio.Event()
        conn = Connection(transport.write, writer.drain, pause, half_close, server=True)
        parser = _SpdyParser(conn, client_eof)
        try:
            if isinstance(job, PortForwardJob):
                fwd = portforward.SpdyForwarder(conn, job.pod_id, job.netns)
                conn.on_stream = fwd.on_stream
                proto.set_parser(parser)  # type: ignore[arg-type]
                await fwd.serve()
            else:
                await self._remote(conn, protocol, job, proto, parser)
        finally:
            with contextlib.suppress(TimeoutError):  # then aiohttp closes the transport
                await asyncio.wait_for(client_eof.wait(), LINGER)
        return resp

    async def _remote(self, conn: Connection, protocol: str, job: ExecJob | AttachJob,
                      proto: Any, parser: _SpdyParser) -> None:
        expected = {"error"} | {n for n, on in (("stdin", job.stdin), ("stdout", job.stdout),
                                                ("stderr", job.stderr and not job.tty)) if on}
        if job.tty and protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
            expected.add("resize")
        io = remotecommand.SpdyIO(conn, protocol, expected)
        conn.on_stream = io.on_stream
        proto.set_parser(parser)
        try:
            if not await io.wait_streams():
                await io.finish(None, "timed out waiting for the client's streams")
                return
            await remotecommand.run_session(io, lambda: self._start(job), job.stdin,
                                            self._exit_of(job))
        finally:
            conn.shutdown()

    async def _start(self, job: ExecJob | AttachJob) -> Any:
        if isinstance(job, ExecJob):
            return await self.monitor.exec_stream(job.container_id, job.process, tty=job.tty,
                                                  stdin=job.stdin)
        return await self.monitor.attach(job.container_id, stdin=job.stdin, stdout=job.stdout,
                                         stderr=job.stderr)

    def _exit_of(self, job: ExecJob | AttachJob
                 ) -> Callable[[StreamSession], Awaitable[int | None]] | None:
        """How an exec's exit code is learnt (none for attach: it reports no code)."""
        return self.monitor.exec_exit if isinstance(job, ExecJob) else None

    async def _websocket(self, request: web.Request, job: Job) -> web.StreamResponse:
        pf = isinstance(job, PortForwardJob)
        ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS if pf else EXEC_PROTOCOLS,
                                   max_msg_size=1 << 20, heartbeat=None)
        await ws.prepare(request)
        try:
            if isinstance(job, PortForwardJob):
                ports = [int(p) for p in request.query.getall("port", []) if p.isdigit()]
                await portforward.serve_ws(Channels(ws), job.pod_id, job.netns,
                                           ports or job.ports)
            else:
                io = WsIO(ws, job.stdout, job.stderr and not job.tty)
                await io.start()
                await remotecommand.run_session(io, lambda: self._start(job), job.stdin,
                                                self._exit_of(job))
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
                await ws.close()
        return ws
