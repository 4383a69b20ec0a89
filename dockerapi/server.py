"""The Docker Engine API server: aiohttp over a unix socket, API 1.41, bare and /v1.NN paths.

Every failure becomes Docker's JSON {"message": ...} with the status the CLI expects; an
unknown endpoint is a 404 naming it; bodies, header lines and connections are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from typing import Any

import structlog
from aiohttp import web

from dockerapi import (
    attach,
    builds,
    containers,
    execs,
    health,
    images,
    inspect,
    lifecycle,
    logs,
    networks,
    ps,
    push,
    stats,
    system,
    volumes,
)
from dockerapi.errors import reply, status_of
from dockerapi.hijack import HijackableHandler
from dockerapi.http import FRONT, Handler, Route
from dockerapi.model import Front
from engine.context import Context
from engine.errors import EngineError

log = structlog.get_logger("dockerapi")
VERSION = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
# docker-py asks for `/containers//name/json` when given "/name": the slash is the name's.
ID = "{id:/?[^/]+}"
SYNC_WAIT = 10.0
MAX_LINE = 8190  # request line and each header line, as aiohttp's (and Go's) defaults
BACKLOG = 4096  # pending connects, as Go asks (somaxconn caps it): a burst of clients waits
ROUTES: list[Route] = [*system.ROUTES, *ps.ROUTES, *inspect.ROUTES, *containers.ROUTES,
                       *logs.ROUTES, *attach.ROUTES, *execs.ROUTES, *push.ROUTES, *images.ROUTES,
                       *stats.ROUTES, *builds.ROUTES, *volumes.ROUTES,
                       *networks.ROUTES]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Engine errors to statuses; nothing a client sends gets a traceback or kills berthd."""
    try:
        return await handler(request)
    except EngineError as exc:
        return reply(status_of(exc), str(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        return reply(413, f"request body too large: {exc.text}")
    except web.HTTPMethodNotAllowed:
        return reply(405, f"method not allowed: {request.method} {request.path[:300]}")
    except web.HTTPNotFound:
        return reply(404, f"page not found: {request.method} {request.path[:300]}")
    except web.HTTPException:
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("docker api request failed", method=request.method,
                      path=request.path[:300])
        return reply(500, f"{type(exc).__name__}: {exc}")


def _versioned(path: str) -> str:
    return r"/{version:v[0-9]+\.[0-9]+}" + path


@web.middleware
async def api_version(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client asking for a newer API than 1.41 is told so, as dockerd does."""
    m = VERSION.match(request.path)
    if m and (int(m.group(1)), int(m.group(2))) > (1, 41):
        return reply(400, f"client version {m.group(1)}.{m.group(2)} is too new. Maximum "
                          f"supported API version is {system.API_VERSION}")
    return await handler(request)


def build(front: Front, max_body: int) -> web.Application:
    """Each route three times: bare, under `/v1.41` (what current clients send) and under any
    `/vN.N`. aiohttp indexes a route by its path up to the first `{`, so the pattern ones all
    share the `/` bucket and are tried one regex at a time in order (~45 of them before a
    network route, 0.1-0.25 ms a request); the literal prefix is found at once."""
    app = web.Application(middlewares=[errors, api_version], client_max_size=max_body)
    app[FRONT] = front
    for method, route, handler in ROUTES:
        path = route.replace("{id}", ID)
        app.router.add_route(method, path, handler)
        app.router.add_route(method, f"/v{system.API_VERSION}{path}", handler)
        app.router.add_route(method, _versioned(path), handler)
    return app


class DockerServer:
    """Owns the listening socket, the runner and the Docker front end's engine listener."""

    def __init__(self, ctx: Context, path: str, max_connections: int, max_body: int) -> None:
        self.front = Front(ctx)
        self.path = path
        self.max_connections = max_connections
        self.app = build(self.front, max_body)
        self.runner: web.AppRunner | None = None
        ctx.listeners.append(lambda ev: lifecycle.on_event(self.front, ev))

    async def start(self) -> None:
        """Listen once the state cache holds the monitor's view (bounded wait): Docker's
        answers read it, and a container must not look "created" after a berthd restart."""
        for _ in range(int(SYNC_WAIT / 0.02)):
            if self.front.ctx.states.synced:
                break
            await asyncio.sleep(0.02)
        # tcp_keepalive off: the socket is a unix one, where SO_KEEPALIVE is a wasted syscall
        # on every connection (each docker CLI command opens one)
        handler_args: dict[str, Any] = {"access_log": None, "max_line_size": MAX_LINE,
                                        "max_field_size": MAX_LINE, "tcp_keepalive": False}
        # handler_cancellation: a client that hangs up cancels its handler, so an idle
        # events or logs stream does not hold its connection (and a slot) forever
        self.runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0,
                                    handler_cancellation=True, **handler_args)
        await self.runner.setup()
        await self.front.ctx.networks.start()
        server = self.runner.server
        assert server is not None
        limit = self.max_connections
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            if len(server.connections) >= limit:
                return _Refuse()
            return HijackableHandler(server, loop=loop, **handler_args)

        self._server = await loop.create_unix_server(factory, self.path, backlog=BACKLOG)
        os.chmod(self.path, 0o660)
        self.front.spawn(lifecycle.resume(self.front))

    async def stop(self) -> None:
        self._server.close()
        health.cancel_all(self.front)
        for task in list(self.front.tasks):
            task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.front.ctx.networks.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Refuse(asyncio.Protocol):
    """Past max_connections: one 503 and the connection closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = b'{"message":"too many connections"}\n'
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                        b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                        + b"\r\n\r\n" + body)
        transport.close()

