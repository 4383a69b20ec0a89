"""POST /build: the classic builder's protocol over the engine's builder.

The context tar is spooled to the state dir as it arrives (never held in memory; the engine's
`Spool` indexes and hashes it on the way in), then built by `engine.imagebuild`. Options that
are wrong are a 400 before the stream starts; once it has started, a failure is an
`error`/`errorDetail` message in the stream, as dockerd reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from dockerapi.http import Route, error_line, front, json_lines, qbool, qjson
from dockerapi.images import short_name
from dockerapi.regauth import registry_config
from engine.errors import InvalidArgument
from engine.imagebuild.builder import BuildError, BuildOptions, build
from engine.imagebuild.cache import BuildCache
from engine.imagebuild.context import Spool, Spooled
from engine.imagebuild.runner import NETWORK_MODES, Runner
from runtime.images import reference

MAX_CONTEXT = 8 << 30
_CACHES: dict[str, BuildCache] = {}


def _cache(state_dir: str) -> BuildCache:
    """One cache per state dir, loaded once (it survives restarts on disk)."""
    if state_dir not in _CACHES:
        _CACHES[state_dir] = BuildCache(Path(state_dir) / "build")
    return _CACHES[state_dir]


def _string_map(request: web.Request, name: str) -> dict[str, Any]:
    value = qjson(request, name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidArgument(f"{name} must be a JSON object of strings")
    for k, v in value.items():
        if v is not None and not isinstance(v, str):
            raise InvalidArgument(f"{name}: the value of {k!r} must be a string")
    return value


def options(request: web.Request) -> BuildOptions:
    """The query as build options, refusing what the classic builder cannot do."""
    q = request.query
    if q.get("remote"):
        raise InvalidArgument("remote build contexts are not supported; send a tar context")
    if q.get("version", "1") == "2":
        raise InvalidArgument("BuildKit (version=2) is not supported; use the classic builder "
                              "(DOCKER_BUILDKIT=0)")
    tags = q.getall("t", [])
    for t in tags:
        try:
            reference.normalize(t)
        except ValueError as exc:
            raise InvalidArgument(f"invalid tag {t!r}: {exc}") from None
    network = q.get("networkmode", "") or "default"
    if network not in NETWORK_MODES:
        raise InvalidArgument(f"network mode {network!r} is not supported for builds (use one "
                              f"of {', '.join(NETWORK_MODES)})")
    dockerfile = q.get("dockerfile", "") or "Dockerfile"
    if "\x00" in dockerfile or len(dockerfile) > 4096:
        raise InvalidArgument("invalid dockerfile path")
    return BuildOptions(dockerfile=dockerfile,
                        tags=[str(reference.normalize(t).tagged() or t) for t in tags],
                        build_args=_string_map(request, "buildargs"),
                        target=q.get("target", ""), nocache=qbool(request, "nocache"),
                        pull=qbool(request, "pull"), labels=_string_map(request, "labels"),
                        network=network, auth=registry_config(request))


async def _spool(request: web.Request, path: Path) -> Spooled:
    """The request body into path, in chunks, off the event loop; the engine's spool indexes
    the tar on the way in."""
    spool = await asyncio.to_thread(Spool, path)
    try:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > MAX_CONTEXT:
                raise InvalidArgument(f"build context larger than {MAX_CONTEXT} bytes")
            await asyncio.to_thread(spool.write, chunk)
        return await asyncio.to_thread(spool.finish)
    finally:
        await asyncio.to_thread(spool.close)


async def build_image(request: web.Request) -> web.StreamResponse:
    f = front(request)
    opts = options(request)
    quiet = qbool(request, "q")
    work = Path(f.ctx.config.state_dir) / "build"
    work.mkdir(parents=True, exist_ok=True)
    ctx_tar = work / f"context-{uuid.uuid4().hex}.tar"
    spooled: Spooled | None = None
    try:
        spooled = await _spool(request, ctx_tar)
        async with json_lines(request) as (resp, send):
            def emit(msg: dict[str, Any]) -> None:
                if not quiet or "aux" in msg or "error" in msg:
                    send(msg)

            try:
                img = await build(f.ctx.images, Runner(f.ctx.monitor),
                                  _cache(f.ctx.config.state_dir), work, spooled, opts, emit)
                if quiet:  # the one line `docker build -q` prints
                    send({"stream": img.id + "\n"})
                for tag in opts.tags:
                    f.publish_image(short_name(tag), "tag")
            except BuildError as exc:
                emit(error_line(str(exc)))
        return resp
    finally:
        if spooled is not None:
            spooled.close()
        with contextlib.suppress(FileNotFoundError):
            ctx_tar.unlink()


ROUTES: list[Route] = [("POST", "/build", build_image)]
