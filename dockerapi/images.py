"""Image endpoints: create (pull, streamed JSON progress), list, inspect, tag, remove, history.

One image store serves both front ends: an image pulled here is the one kubelet sees.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import fnmatch
import json
import time
from typing import Any

from aiohttp import web

from dockerapi import image_delete
from dockerapi.http import Route, error_line, filters, front, qbool
from dockerapi.regauth import registry_auth
from engine import errors
from engine.context import Context
from engine.errors import InvalidArgument, NotFound
from runtime.images import reference
from runtime.images.puller import PullEvent
from runtime.images.records import Image
from runtime.images.registry import RegistryError
from runtime.images.store import PullError

BY_HTTP_STATUS: dict[int, type[errors.EngineError]] = {
    401: errors.Unauthenticated, 403: errors.PermissionDenied, 404: errors.NotFound,
    0: errors.Unavailable}


def _config_doc(request: web.Request, img: Image) -> dict[str, Any]:
    return config_doc(front(request).ctx, img)


def config_doc(ctx: Context, img: Image) -> dict[str, Any]:
    """The image's config blob (Created, History, full Config); {} if it cannot be read."""
    try:
        doc = json.loads(ctx.images.content.read_bytes(img.id))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _created(doc: dict[str, Any]) -> int:
    raw = str(doc.get("created") or "")
    try:
        return calendar.timegm(time.strptime(raw[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0


def summary(img: Image, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of GET /images/json."""
    doc = doc or {}
    return {"Id": img.id, "ParentId": "", "RepoTags": [short_name(t) for t in img.repo_tags],
            "RepoDigests": [short_name(d) for d in img.repo_digests], "Created": _created(doc),
            "Size": img.size, "VirtualSize": img.size, "SharedSize": -1,
            "Labels": img.config.labels or None, "Containers": -1}


def short_name(ref: str) -> str:
    """Docker's familiar names: busybox:latest for docker.io/library/busybox:latest."""
    try:
        return reference.familiar(reference.parse(ref))
    except ValueError:
        return ref


def image(request: web.Request, given: str) -> Image:
    img = front(request).ctx.images.get(given)
    if img is None:
        raise NotFound(f"No such image: {given[:300]}")
    return img


async def list_(request: web.Request) -> web.StreamResponse:
    flt = filters(request)
    out = []
    for img in front(request).ctx.images.list():
        if "reference" in flt and not any(_ref_match(img, r) for r in flt["reference"]):
            continue
        if "label" in flt and not all(
                (k := w.partition("=")) and k[0] in img.config.labels
                and (not k[1] or img.config.labels[k[0]] == k[2]) for w in flt["label"]):
            continue
        if "dangling" in flt and (flt["dangling"] == ["true"]) != (not img.repo_tags):
            continue
        out.append(summary(img, _config_doc(request, img)))
    return web.json_response(out)


def _ref_match(img: Image, want: str) -> bool:
    return any(fnmatch.fnmatch(short_name(t), want) or fnmatch.fnmatch(short_name(t), want + ":*")
               or fnmatch.fnmatch(t, want) for t in img.repo_tags)


async def inspect(request: web.Request) -> web.StreamResponse:
    img = image(request, request.match_info["name"])
    doc = _config_doc(request, img)
    cfg = doc.get("config") or {}
    return web.json_response({
        **{k: v for k, v in summary(img, doc).items() if k not in ("Labels", "Containers",
                                                                    "SharedSize", "Created")},
        "Parent": "", "Comment": "", "Created": doc.get("created", ""),
        "Container": "", "ContainerConfig": {}, "DockerVersion": "", "Author": "",
        "Config": cfg, "Architecture": doc.get("architecture", ""),
        "Os": doc.get("os", "linux"), "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(img.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}})


async def history(request: web.Request) -> web.StreamResponse:
    img = image(request, request.match_info["name"])
    doc = _config_doc(request, img)
    out = []
    for h in reversed(doc.get("history") or []):
        out.append({"Id": "<missing>", "Created": _created(h), "CreatedBy": h.get(
            "created_by", ""), "Tags": None, "Size": 0, "Comment": h.get("comment", "")})
    if out:
        out[0].update(Id=img.id, Tags=[short_name(t) for t in img.repo_tags] or None)
    return web.json_response(out)


async def tag(request: web.Request) -> web.StreamResponse:
    f = front(request)
    img = image(request, request.match_info["name"])
    repo, tag_ = request.query.get("repo", ""), request.query.get("tag", "") or "latest"
    if not repo:
        raise InvalidArgument("repository name is required (repo=)")
    try:
        ref = reference.normalize(f"{repo}:{tag_}")
        if ref.digest:
            raise ValueError("refusing to create a tag with a digest reference")
        done = f.ctx.images.tag(img.id, str(ref.tagged()))
    except ValueError as exc:
        raise InvalidArgument(f"invalid reference format: {exc}") from None
    f.publish_image(short_name(done), "tag")
    return web.Response(status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    f = front(request)
    given = request.match_info["name"]
    img = image(request, given)
    states = f.ctx.states.states
    users = [(c.id, (st := states.get(c.id)) is not None and st.status == "running")
             for c in f.ctx.store.containers.find() if c.image_id == img.id]
    done = await asyncio.to_thread(image_delete.delete, f.ctx.images, img, given, users,
                                   qbool(request, "force"))
    for ref, action in done.events:
        f.publish_image(ref, action)
    return web.json_response(done.rows)


async def create(request: web.Request) -> web.StreamResponse:
    """Pull, streaming Docker's progress lines (per layer, with byte counts) while it runs.
    An error before the first line is a status code; after it, an `error` line, as dockerd."""
    f = front(request)
    if request.query.get("fromSrc"):
        raise InvalidArgument("image import (fromSrc) is not supported yet")
    name = request.query.get("fromImage", "")
    if not name:
        raise InvalidArgument("fromImage is required")
    tag_ = request.query.get("tag", "")
    ref = name if not tag_ else (f"{name}@{tag_}" if tag_.startswith("sha256:")
                                 else f"{name}:{tag_}")
    try:
        norm = reference.normalize(ref)
    except ValueError as exc:
        raise InvalidArgument(f"invalid reference format: {exc}") from None
    auth = registry_auth(request)
    had = f.ctx.images.get(str(norm))
    short = short_name(str(norm))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    events: asyncio.Queue[PullEvent | None] = asyncio.Queue()
    started, ok, new_bytes = time.monotonic(), False, 0
    pull = asyncio.ensure_future(f.ctx.images.pull(str(norm), auth, progress=events.put_nowait))
    pull.add_done_callback(lambda _p: events.put_nowait(None))
    try:
        while (ev := await events.get()) is not None:
            if not resp.prepared:
                await resp.prepare(request)
                await _write(resp, {"status": f"Pulling from {short.rsplit(':', 1)[0]}",
                                    "id": norm.tag or norm.digest or "latest"})
            await _write(resp, _progress_line(ev))
        img = await pull
        ok, new_bytes = True, 0 if had else img.size
    except ValueError as exc:
        return await _failed(request, resp, InvalidArgument(f"invalid reference format: {exc}"))
    except RegistryError as exc:
        return await _failed(request, resp,
                             BY_HTTP_STATUS.get(exc.status, errors.EngineError)(str(exc)))
    except PullError as exc:
        return await _failed(request, resp, errors.Internal(str(exc)))
    finally:
        if not pull.done():  # the client went away mid-stream: let the pull finish its work
            with contextlib.suppress(Exception):
                await asyncio.shield(pull)
        for observe in f.ctx.pull_observers:
            observe(str(norm), new_bytes, time.monotonic() - started, ok)
    if not resp.prepared:
        await resp.prepare(request)
    await _write(resp, {"status": f"Digest: {img.manifest_digest}"})
    done = "Image is up to date" if had else "Downloaded newer image"
    await _write(resp, {"status": f"Status: {done} for {short}"})
    f.publish_image(short, "pull")
    return resp


def _progress_line(ev: PullEvent) -> dict[str, Any]:
    lid = ev.digest.split(":")[-1][:12]
    if ev.status == "Downloading":
        return {"status": ev.status, "progressDetail": {"current": ev.current, "total": ev.total},
                "id": lid}
    return {"status": ev.status, "progressDetail": {}, "id": lid}


async def _write(resp: web.StreamResponse, line: dict[str, Any]) -> None:
    await resp.write(json.dumps(line).encode() + b"\r\n")


async def _failed(request: web.Request, resp: web.StreamResponse,
                  exc: errors.EngineError) -> web.StreamResponse:
    """Before the stream began: the status code; after: Docker's error line."""
    if not resp.prepared:
        raise exc
    await _write(resp, error_line(str(exc)))
    return resp


ROUTES: list[Route] = [
    ("POST", "/images/create", create), ("GET", "/images/json", list_),
    ("GET", "/images/{name:.+}/json", inspect), ("GET", "/images/{name:.+}/history", history),
    ("POST", "/images/{name:.+}/tag", tag), ("DELETE", "/images/{name:.+}", remove),
]
