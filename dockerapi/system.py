"""System endpoints: _ping, version, info, events (streamed) and system/df."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import time
from importlib.metadata import version as pkg_version
from typing import Any

from aiohttp import web

from dockerapi import images as imagesmod
from dockerapi import inspect as inspectmod
from dockerapi.http import Route, filters, front
from engine.errors import InvalidArgument
from engine.store import DOCKER
from runtime.bundle import Bundle
from runtime.usage import du

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"


def _headers() -> dict[str, str]:
    return {"API-Version": API_VERSION, "Docker-Experimental": "false", "OSType": "linux",
            "Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate",
            "Pragma": "no-cache"}


async def ping(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":
        return web.Response(headers={**_headers(), "Content-Type": "text/plain; charset=utf-8",
                                     "Content-Length": "0"})
    return web.Response(text="OK", headers=_headers())


async def version(request: web.Request) -> web.StreamResponse:
    ours = pkg_version("berth")
    uname = os.uname()
    return web.json_response({
        "Platform": {"Name": "Berth"},
        "Components": [{"Name": "Engine", "Version": ours,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                    "Os": "linux", "Arch": _arch()}}],
        "Version": ours, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "", "GoVersion": f"python{platform.python_version()}", "Os": "linux",
        "Arch": _arch(), "KernelVersion": uname.release, "BuildTime": ""})


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


async def info(request: web.Request) -> web.StreamResponse:
    f = front(request)
    ctx = f.ctx
    states = ctx.states.states
    recs = ctx.store.containers.owned(DOCKER)
    running = sum(1 for r in recs if (st := states.get(r.id)) and st.status == "running")
    stopped = sum(1 for r in recs if (st := states.get(r.id)) and st.status == "stopped")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return web.json_response({
        "ID": ctx.config.state_dir, "Containers": len(recs), "ContainersRunning": running,
        "ContainersPaused": 0, "ContainersStopped": stopped, "Images": len(ctx.images.list()),
        "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "DockerRootDir": ctx.config.state_dir, "SystemTime": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if ctx.cgroup_version == "v2" else "1",
        "NEventsListener": len(f.hub.subscribers), "KernelVersion": os.uname().release,
        "OperatingSystem": platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
        if hasattr(platform, "freedesktop_os_release") else "Linux",
        "OSType": "linux", "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1,
        "MemTotal": mem, "Name": socket.gethostname(), "ServerVersion": pkg_version("berth"),
        "Runtimes": {"berth": {"path": "berth"}}, "DefaultRuntime": "berth",
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"], "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "PidsLimit": True, "IPv4Forwarding": True,
        "Labels": [], "ExperimentalBuild": False, "LiveRestoreEnabled": True,
        "SecurityOptions": ["name=seccomp,profile=default"], "Warnings": []})


def _matches(ev: dict[str, Any], f: dict[str, list[str]]) -> bool:
    actor = ev.get("Actor", {})
    attrs = actor.get("Attributes", {})
    checks = {"type": [ev.get("Type", "")], "event": [ev.get("Action", "")],
              "container": [actor.get("ID", ""), attrs.get("name", "")],
              "image": [attrs.get("image", ""), attrs.get("name", "")]}
    for key, wanted in f.items():
        if key == "label":
            if not any(_label_ok(attrs, w) for w in wanted):
                return False
        elif key in checks and not any(w in checks[key] or any(
                v.startswith(w) for v in checks[key] if key == "container") for w in wanted):
            return False
    return True


def _label_ok(attrs: dict[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in attrs and (not eq or attrs[key] == value)


def _when(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"invalid {name} timestamp: {raw[:50]}") from None


async def events(request: web.Request) -> web.StreamResponse:
    """Past events since `since` (from a bounded history), then live ones until `until`."""
    f = front(request)
    since, until = _when(request, "since"), _when(request, "until")
    flt = filters(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    now = time.time()
    # subscribed before the 200 goes out, so whatever happens once the client has it is sent;
    # what came before is history, replayed up to the subscription (no event twice)
    async with f.hub.subscribe() as stream:
        past = list(f.history)
        await resp.prepare(request)
        if since is not None:
            for ev in past:
                if ev["timeNano"] / 1e9 >= since and (until is None
                                                      or ev["timeNano"] / 1e9 <= until) \
                        and _matches(ev, flt):
                    await resp.write(json.dumps(ev).encode() + b"\n")
        if until is not None and until <= now:
            return resp
        while True:
            timeout = None if until is None else max(0.0, until - time.time())
            try:
                ev = await asyncio.wait_for(anext(stream), timeout)
            except (TimeoutError, StopAsyncIteration):
                break
            if _matches(ev, flt):
                await resp.write(json.dumps(ev).encode() + b"\n")
    return resp


async def df(request: web.Request) -> web.StreamResponse:
    ctx = front(request).ctx
    used = {r.image_id for r in ctx.store.containers.find()}

    def sizes() -> list[tuple[str, int]]:
        return [(r.id, du(str(Bundle(ctx.bundle_dir(r.id)).upper))[0])
                for r in ctx.store.containers.owned(DOCKER)]

    per = dict(await asyncio.to_thread(sizes))
    imgs = []
    for img in ctx.images.list():
        summary = imagesmod.summary(img)
        summary["Containers"] = sum(1 for r in ctx.store.containers.find(image_id=img.id))
        imgs.append(summary)
    ctrs = []
    for rec in ctx.store.containers.owned(DOCKER):
        item = inspectmod.summary(front(request), rec)
        item["SizeRw"] = per.get(rec.id, 0)
        ctrs.append(item)
    return web.json_response({
        "LayersSize": sum(i.size for i in ctx.images.list() if i.id in used) or 0,
        "Images": imgs, "Containers": ctrs, "Volumes": [], "BuildCache": []})


ROUTES: list[Route] = [
    ("GET", "/_ping", ping), ("HEAD", "/_ping", ping), ("GET", "/version", version),
    ("GET", "/info", info), ("GET", "/events", events), ("GET", "/system/df", df),
]
