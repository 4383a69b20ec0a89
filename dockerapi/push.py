"""POST /images/{name}/push: the engine's pusher, reported as Docker's push progress stream.

Without a tag, every local tag of the repository is pushed, as dockerd does. Progress lines
carry the 12-character layer ids the CLI draws bars for; a failure after the stream started is an
`error`/`errorDetail` message, before it a status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from dockerapi.http import Route, front
from dockerapi.images import _auth, _short
from engine.errors import NotFound
from runtime.images import reference
from runtime.images.pusher import PushError, PushEvent


def _targets(request: web.Request, name: str) -> list[str]:
    """The tagged references to push; 404 in dockerd's words when there are none."""
    images = front(request).ctx.images
    tag = request.query.get("tag", "")
    try:
        repo = reference.normalize(name)
    except ValueError as exc:
        raise NotFound(f"An image does not exist locally with the tag: {name[:300]} "
                       f"({exc})") from None
    if tag:
        try:
            ref = str(reference.normalize(f"{repo.name}:{tag}"))
        except ValueError as exc:
            raise NotFound(f"An image does not exist locally with the tag: {name}:{tag[:100]} "
                           f"({exc})") from None
        if images.get(ref) is None:
            raise NotFound(f"An image does not exist locally with the tag: {_short(ref)}")
        return [ref]
    explicit = ":" in name.rsplit("/", 1)[-1]
    if explicit:
        if images.get(str(repo)) is None:
            raise NotFound(f"An image does not exist locally with the tag: {name[:300]}")
        return [str(repo)]
    refs = sorted(t for img in images.list() for t in img.repo_tags
                  if t.rsplit(":", 1)[0] == repo.name)
    if not refs:
        raise NotFound(f"An image does not exist locally with the tag: {_short(repo.name)}")
    return refs


def _line(ev: PushEvent) -> dict[str, Any]:
    lid = ev.digest.split(":")[-1][:12]
    if ev.status == "Pushing":
        return {"status": "Pushing", "id": lid,
                "progressDetail": {"current": ev.current, "total": ev.total}}
    return {"status": ev.status, "progressDetail": {}, "id": lid}


async def push(request: web.Request) -> web.StreamResponse:
    f = front(request)
    name = request.match_info["name"]
    targets = _targets(request, name)
    auth = _auth(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def writer() -> None:
        while (msg := await out.get()) is not None:
            await resp.write(json.dumps(msg).encode() + b"\r\n")

    pump = asyncio.create_task(writer())
    try:
        repo = reference.normalize(targets[0])
        out.put_nowait({"status": f"The push refers to repository [{_short(repo.name)}]"})
        for ref in targets:
            r = reference.normalize(ref)
            result = await f.ctx.images.push(ref, ref, auth,
                                             lambda ev: out.put_nowait(_line(ev)))
            out.put_nowait({"status": f"{r.tag}: digest: {result.digest} size: {result.size}"})
            out.put_nowait({"progressDetail": {}, "aux": {"Tag": r.tag, "Digest": result.digest,
                                                          "Size": result.size}})
            f.publish_image(_short(ref), "push")
    except PushError as exc:
        out.put_nowait({"errorDetail": {"message": str(exc)}, "error": str(exc)})
    finally:
        out.put_nowait(None)
        with contextlib.suppress(ConnectionError):
            await pump
    return resp


ROUTES: list[Route] = [("POST", "/images/{name:.+}/push", push)]
