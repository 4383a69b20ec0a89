"""POST /images/{name}/push: the engine's pusher, reported as Docker's push progress stream.

Without a tag, every local tag of the repository is pushed, as dockerd does. Progress lines
carry the 12-character layer ids the CLI draws bars for; a failure after the stream started is an
`error`/`errorDetail` message, before it a status code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi.http import Route, error_line, front, json_lines
from dockerapi.images import short_name
from dockerapi.regauth import registry_auth
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
            raise NotFound(f"An image does not exist locally with the tag: {short_name(ref)}")
        return [ref]
    explicit = ":" in name.rsplit("/", 1)[-1]
    if explicit:
        if images.get(str(repo)) is None:
            raise NotFound(f"An image does not exist locally with the tag: {name[:300]}")
        return [str(repo)]
    refs = sorted(t for img in images.list() for t in img.repo_tags
                  if t.rsplit(":", 1)[0] == repo.name)
    if not refs:
        raise NotFound(f"An image does not exist locally with the tag: {short_name(repo.name)}")
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
    auth = registry_auth(request)
    async with json_lines(request) as (resp, emit):
        try:
            repo = reference.normalize(targets[0])
            emit({"status": f"The push refers to repository [{short_name(repo.name)}]"})
            for ref in targets:
                r = reference.normalize(ref)
                result = await f.ctx.images.push(ref, ref, auth, lambda ev: emit(_line(ev)))
                emit({"status": f"{r.tag}: digest: {result.digest} size: {result.size}"})
                emit({"progressDetail": {}, "aux": {"Tag": r.tag, "Digest": result.digest,
                                                    "Size": result.size}})
                f.publish_image(short_name(ref), "push")
        except PushError as exc:
            emit(error_line(str(exc)))
    return resp


ROUTES: list[Route] = [("POST", "/images/{name:.+}/push", push)]
