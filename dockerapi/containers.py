"""Container endpoints: create, start, stop, kill, restart, wait, remove, rename, pause, resize,
top."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from dockerapi import body as bodymod
from dockerapi import images, lifecycle, model
from dockerapi.http import Route, body, front, qbool, qint
from engine import containers
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime import cgroups
from runtime import containers as monitor
from runtime.images import reference


def _no_content() -> web.Response:
    return web.Response(status=204)


def _not_modified() -> web.Response:
    return web.Response(status=304)


async def create(request: web.Request) -> web.StreamResponse:
    f = front(request)
    parsed = bodymod.parse(await body(request))
    name = request.query.get("name", "")
    name = model.check_name(name) if name else model.new_name(f.ctx)
    image = f.ctx.images.get(parsed.image)
    if image is None:
        try:
            ref = reference.familiar(reference.normalize(parsed.image))
        except ValueError:
            raise InvalidArgument(f"invalid reference format: {parsed.image[:300]}") from None
        raise NotFound(f"No such image: {ref}")
    rec = await f.complete(lifecycle.create(f, parsed, image, name,
                                            images.config_doc(f.ctx, image)))
    f.publish(rec, "create", {})
    return web.json_response({"Id": rec.id, "Warnings": []}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    return _no_content() if await f.complete(lifecycle.start(f, rec)) else _not_modified()


def _timeout(request: web.Request) -> int | None:
    t = qint(request, "t")
    if t is None:
        t = qint(request, "timeout")
    return t


async def stop(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    sig = request.query.get("signal")
    stopped = await f.complete(lifecycle.stop(
        f, rec, _timeout(request), bodymod.parse_signal(sig, "signal") if sig else None))
    if stopped:
        f.publish(rec, "stop", {})
    return _no_content() if stopped else _not_modified()


async def kill(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    sig = bodymod.parse_signal(request.query.get("signal") or "SIGKILL", "signal")
    if not lifecycle.running(f, rec):
        raise FailedPrecondition(f"Container {rec.id} is not running")
    f.stopping.add(rec.id)
    try:
        await f.ctx.monitor.kill(rec.id, sig)
    except (monitor.NotFound, monitor.InvalidState):
        raise FailedPrecondition(f"Container {rec.id} is not running") from None
    f.publish(rec, "kill", {"signal": str(sig)})
    return _no_content()


async def restart(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    await f.complete(lifecycle.stop(f, rec, _timeout(request)))
    await f.complete(lifecycle.start(f, rec))
    f.publish(rec, "restart", {})
    return _no_content()


async def wait(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    condition = request.query.get("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidArgument(f"invalid condition: \"{condition[:50]}\"")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)  # headers now: the CLI waits for them before it starts
    code = await lifecycle.wait(f, rec, condition)
    await resp.write(f'{{"StatusCode":{code},"Error":null}}\n'.encode())
    return resp


async def remove(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    if qbool(request, "link"):
        raise InvalidArgument("links are not supported")
    await f.complete(lifecycle.remove(f, rec, qbool(request, "force"), qbool(request, "v")))
    f.publish(rec, "destroy", {})
    return _no_content()


async def rename(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    new = model.check_name(request.query.get("name", "") or "")
    model.reserve_name(f.ctx, new, for_id=rec.id)
    old = rec.name
    rec.name = new
    f.ctx.store.containers.put(rec)
    f.publish(rec, "rename", {"oldName": "/" + old})
    return _no_content()


async def pause(request: web.Request) -> web.StreamResponse:
    return await _freeze(request, True)


async def unpause(request: web.Request) -> web.StreamResponse:
    return await _freeze(request, False)


async def _freeze(request: web.Request, paused: bool) -> web.StreamResponse:
    """Pause or unpause: dockerd refuses (409) a container already in the state asked for."""
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    if (rec.id in f.paused) == paused:
        raise FailedPrecondition(f"Container {rec.id} is {'already' if paused else 'not'} paused")
    await containers.freeze(f.ctx, rec, paused)
    if paused:
        f.paused.add(rec.id)
    else:
        f.paused.discard(rec.id)
    f.publish(rec, "pause" if paused else "unpause", {})
    return _no_content()


async def resize(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    if not (0 < h < 65536 and 0 < w < 65536):
        raise InvalidArgument("resize needs h and w between 1 and 65535")
    try:
        await f.ctx.monitor.resize(rec.id, w, h)
    except (monitor.NotFound, monitor.InvalidState) as exc:
        raise FailedPrecondition(f"cannot resize container {rec.id}: {exc}") from None
    return web.Response(status=200)


def _ps(pids: list[int]) -> list[list[str]]:
    rows = []
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            with open(f"/proc/{pid}/cmdline", "rb") as fb:
                cmd = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
            uid = status.get("Uid", "0").split()[0]
            rows.append([uid, str(pid), status.get("PPid", "0").strip(), cmd or
                         f"[{status.get('Name', '').strip()}]"])
    return rows


async def top(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    st = f.ctx.states.states.get(rec.id)
    if st is None or st.status != "running":
        raise FailedPrecondition(f"Container {rec.id} is not running")

    drv = cgroups.driver(f.ctx.config.runtime.cgroup_root)
    pids = await asyncio.to_thread(drv.pids, st.cgroup_path)
    rows = await asyncio.to_thread(_ps, sorted(pids))
    return web.json_response({"Titles": ["UID", "PID", "PPID", "CMD"], "Processes": rows})


ROUTES: list[Route] = [
    ("POST", "/containers/create", create), ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/stop", stop), ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/restart", restart), ("POST", "/containers/{id}/wait", wait),
    ("DELETE", "/containers/{id}", remove), ("POST", "/containers/{id}/rename", rename),
    ("POST", "/containers/{id}/pause", pause), ("POST", "/containers/{id}/unpause", unpause),
    ("POST", "/containers/{id}/resize", resize), ("GET", "/containers/{id}/top", top),
]
