"""What every handler needs from a request: the front end, query values, the JSON body."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from dockerapi.model import Front
from engine.errors import InvalidArgument

FRONT: web.AppKey[Front] = web.AppKey("front", Front)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]
Emit = Callable[[dict[str, Any]], None]


def front(request: web.Request) -> Front:
    return request.app[FRONT]


def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's booleans: 1/true/True (and anything but 0/false/empty counts as true)."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {value[:50]!r} is not an integer") \
            from None


def qjson(request: web.Request, name: str) -> Any:
    """Query values that carry JSON, like `filters`."""
    value = request.query.get(name)
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise InvalidArgument(f"invalid {name} JSON: {value[:100]}") from None


async def body(request: web.Request, default: Any = None) -> Any:
    """The JSON body; empty means `default`, malformed is a 400 naming the problem."""
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None


def filters(request: web.Request,
            allowed: Collection[str] | None = None) -> dict[str, list[str]]:
    """`filters` as {"key": ["v", ...]} or the older {"key": {"v": true}} form; a key outside
    `allowed` (when given) is dockerd's 400 "invalid filter"."""
    raw = qjson(request, "filters") or {}
    if not isinstance(raw, dict):
        raise InvalidArgument("filters must be a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out[key] = [str(k) for k, on in value.items() if on]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
        if allowed is not None and key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")
    return out


@contextlib.asynccontextmanager
async def json_lines(request: web.Request) -> AsyncIterator[tuple[web.StreamResponse, Emit]]:
    """A streamed 200 of Docker's JSON progress lines. `emit` never waits (progress callbacks
    run synchronously inside pulls, builds and pushes); a writer task sends the lines in order
    and the block ends once every one has gone or the client has left."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def writer() -> None:
        while (msg := await out.get()) is not None:
            await resp.write(json.dumps(msg).encode() + b"\r\n")

    pump = asyncio.create_task(writer())
    try:
        yield resp, out.put_nowait
    finally:
        out.put_nowait(None)
        with contextlib.suppress(ConnectionError):
            await pump


def error_line(message: str) -> dict[str, Any]:
    """How a stream that already answered 200 reports its failure, as dockerd does."""
    return {"errorDetail": {"message": message}, "error": message}
