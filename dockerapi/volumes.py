"""Volume endpoints: create, list (filters), inspect, remove (409 while in use), prune."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from dockerapi.http import Route, body, filters, front, qbool
from engine.errors import InvalidArgument
from engine.store import VolumeRecord

FILTERS = ("name", "label", "dangling", "driver")


def _created(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def view(request: web.Request, rec: VolumeRecord) -> dict[str, Any]:
    """A volume as `docker volume inspect` prints it."""
    return {"Name": rec.id, "Driver": rec.driver, "CreatedAt": _created(rec.created_ns),
            "Mountpoint": str(front(request).ctx.volumes.mountpoint(rec.id)),
            "Labels": rec.labels or {}, "Scope": "local", "Options": {}}


def _label_match(rec: VolumeRecord, wanted: list[str]) -> bool:
    for w in wanted:
        key, eq, value = w.partition("=")
        if key not in rec.labels or (eq and rec.labels[key] != value):
            return False
    return True


async def create(request: web.Request) -> web.StreamResponse:
    spec = await body(request, {})
    if not isinstance(spec, dict):
        raise InvalidArgument("the volume config must be a JSON object")
    name, driver = spec.get("Name") or "", spec.get("Driver") or "local"
    labels, opts = spec.get("Labels") or {}, spec.get("DriverOpts") or {}
    if not isinstance(name, str) or not isinstance(driver, str):
        raise InvalidArgument("Name and Driver must be strings")
    for what, value in (("Labels", labels), ("DriverOpts", opts)):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise InvalidArgument(f"{what} must be a JSON object of strings")
    rec = front(request).ctx.volumes.create(name, driver, labels, opts)
    front(request).publish_volume(rec.id, "create")
    return web.json_response(view(request, rec), status=201)


async def list_(request: web.Request) -> web.StreamResponse:
    flt = filters(request, FILTERS)
    ctx = front(request).ctx
    out = []
    for rec in ctx.volumes.list():
        if "name" in flt and not any(n in rec.id for n in flt["name"]):
            continue
        if "driver" in flt and rec.driver not in flt["driver"]:
            continue
        if "label" in flt and not _label_match(rec, flt["label"]):
            continue
        if "dangling" in flt:
            dangling = flt["dangling"][0].lower() in ("1", "true")
            if dangling == bool(ctx.volume_users(rec.id)):
                continue
        out.append(view(request, rec))
    return web.json_response({"Volumes": out, "Warnings": None})


async def inspect(request: web.Request) -> web.StreamResponse:
    rec = front(request).ctx.volumes.get(request.match_info["name"])
    return web.json_response(view(request, rec))


async def remove(request: web.Request) -> web.StreamResponse:
    ctx = front(request).ctx
    name = request.match_info["name"]
    trash = ctx.volumes.remove(name, ctx.volume_users, qbool(request, "force"))
    await asyncio.to_thread(ctx.volumes.purge, trash)
    front(request).publish_volume(name, "destroy")
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    flt = filters(request, ("label",))
    ctx = front(request).ctx
    wanted = flt.get("label", [])
    removed, trash = ctx.volumes.prune(
        ctx.volume_users, lambda rec: bool(wanted) and not _label_match(rec, wanted))
    reclaimed = await asyncio.to_thread(ctx.volumes.reclaim, trash)
    for name in removed:
        front(request).publish_volume(name, "destroy")
    return web.json_response({"VolumesDeleted": removed or None, "SpaceReclaimed": reclaimed})


ROUTES: list[Route] = [
    ("POST", "/volumes/create", create), ("GET", "/volumes", list_),
    ("POST", "/volumes/prune", prune), ("GET", "/volumes/{name}", inspect),
    ("DELETE", "/volumes/{name}", remove),
]
