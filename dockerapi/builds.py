"""POST /build: the classic builder's protocol over the engine's builder.

The context tar is spooled to the state dir as it arrives (never held in memory), then built by
`engine.imagebuild`. Options that are wrong are a 400 before the stream starts; once it has started,
a failure is an `error`/`errorDetail` message in the stream, as dockerd reports it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from dockerapi.http import Route, front, qbool, qjson
from dockerapi.images import _short
from engine.errors import InvalidArgument
from engine.imagebuild.builder import BuildError, BuildOptions, build
from engine.imagebuild.cache import BuildCache
from engine.imagebuild.runner import NETWORK_MODES, Runner
from runtime.images import reference
from runtime.images.registry import Auth

MAX_CONTEXT = 8 << 30
MAX_CONFIG_HEADER = 64 << 10
_CACHES: dict[str, BuildCache] = {}


def _cache(state_dir: str) -> BuildCache:
    """One cache per state dir, loaded once (it survives restarts on disk)."""
    if state_dir not in _CACHES:
        _CACHES[state_dir] = BuildCache(Path(state_dir) / "build")
    return _CACHES[state_dir]


def _registry_config(request: web.Request) -> dict[str, Auth]:
    """X-Registry-Config: base64url JSON of {registry: {username, password, ...}}."""
    raw = request.headers.get("X-Registry-Config", "")
    if not raw:
        return {}
    if len(raw) > MAX_CONFIG_HEADER:
        raise InvalidArgument("X-Registry-Config header is too large")
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidArgument("X-Registry-Config is not base64url-encoded JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("X-Registry-Config must be a JSON object")
    out = {}
    for host, a in data.items():
        if isinstance(a, dict):
            out[str(host).removeprefix("https://").removeprefix("http://").split("/")[0]] = Auth(
                username=str(a.get("username") or ""), password=str(a.get("password") or ""),
                auth=str(a.get("auth") or ""),
                identity_token=str(a.get("identitytoken") or ""))
    return out


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
                        network=network, auth=_registry_config(request))


async def _spool(request: web.Request, path: Path) -> None:
    """The request body into path, in chunks, off the event loop."""
    fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_CLOEXEC, 0o600)
    try:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > MAX_CONTEXT:
                raise InvalidArgument(f"build context larger than {MAX_CONTEXT} bytes")
            await asyncio.to_thread(os.write, fd, chunk)
    finally:
        os.close(fd)


async def build_image(request: web.Request) -> web.StreamResponse:
    f = front(request)
    opts = options(request)
    quiet = qbool(request, "q")
    work = Path(f.ctx.config.state_dir) / "build"
    work.mkdir(parents=True, exist_ok=True)
    ctx_tar = work / f"context-{uuid.uuid4().hex}.tar"
    try:
        await _spool(request, ctx_tar)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def emit(msg: dict[str, Any]) -> None:
            if not quiet or "aux" in msg or "error" in msg:
                out.put_nowait(msg)

        async def writer() -> None:
            while (msg := await out.get()) is not None:
                await resp.write(json.dumps(msg).encode() + b"\r\n")

        pump = asyncio.create_task(writer())
        try:
            img = await build(f.ctx.images, Runner(f.ctx.monitor), _cache(f.ctx.config.state_dir),
                              work, ctx_tar, opts, emit)
            if quiet:  # the one line `docker build -q` prints
                out.put_nowait({"stream": img.id + "\n"})
            for tag in opts.tags:
                f.publish_image(_short(tag), "tag")
        except BuildError as exc:
            emit({"errorDetail": {"message": str(exc)}, "error": str(exc)})
        finally:
            out.put_nowait(None)
            with contextlib.suppress(ConnectionError):
                await pump
        return resp
    finally:
        with contextlib.suppress(FileNotFoundError):
            ctx_tar.unlink()


ROUTES: list[Route] = [("POST", "/build", build_image)]
