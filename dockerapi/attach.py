"""POST /containers/{id}/attach: a hijacked connection carrying the container's stdio.

Output is read from the container's log file (the monitor writes every byte there), so an
attach made before start (what `docker run` does) misses nothing; stdin goes through a monitor
attach session once the container runs.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from dockerapi import logs, model
from dockerapi.hijack import MULTIPLEXED, RAW, STREAM_IDS, Hijacked, frame, hijack
from dockerapi.http import Route, front, qbool
from dockerapi.model import Front
from engine.store import ContainerRecord
from runtime import containers as monitor

RUN_WAIT = 0.05  # s between looks for the container to start, before stdin can be attached


async def _output(h: Hijacked, path: str, start: int, done: asyncio.Event, want: set[str],
                  tty: bool) -> None:
    async for r, _ in logs.records(path, True, done, start):
        if r.stream not in want:
            continue
        text = r.content if r.partial else r.content + b"\n"
        if not await h.write(text if tty else frame(STREAM_IDS[r.stream], text)):
            return


async def _input(f: Front, rec: ContainerRecord, h: Hijacked, done: asyncio.Event,
                 once: bool) -> None:
    """Client bytes to the container's stdin; EOF closes it for a StdinOnce container."""
    while not done.is_set():
        st = f.ctx.states.states.get(rec.id)
        if st is not None and st.status == "running":
            break
        await asyncio.sleep(RUN_WAIT)
    else:
        return
    try:
        session = await f.ctx.monitor.attach(rec.id, stdin=True, stdout=False, stderr=False)
    except (monitor.MonitorError, ConnectionError):
        return
    try:
        while data := await h.read():
            await session.send_stdin(data)
        if once:
            await session.close_stdin()
    finally:
        session.close()


async def attach(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    d = model.docker(rec)
    tty = bool(d.get("tty"))
    want = {s for s in ("stdout", "stderr") if qbool(request, s)}
    path = rec.extra.get("log_path", "")
    start = 0 if qbool(request, "logs") else logs.size(path)
    done = asyncio.Event()
    if qbool(request, "stream"):
        f.waiter(rec.id, "stopped").add_done_callback(lambda _f: done.set())
    else:
        done.set()
    h = await hijack(request, RAW if tty else MULTIPLEXED)
    f.publish(rec, "attach", {})  # dockerd's containerAttach logs it once the streams are up
    out = asyncio.create_task(_output(h, path, start, done, want, tty))
    f.reading(rec.id, out)
    use_stdin = qbool(request, "stdin") and bool(d.get("open_stdin"))
    inp = asyncio.create_task(
        _input(f, rec, h, done, bool(d.get("config", {}).get("StdinOnce")))
        if use_stdin else _drain(h))
    try:
        await asyncio.wait({out, inp}, return_when=asyncio.FIRST_COMPLETED)
        if inp.done() and request.transport is not None and request.transport.is_closing():
            out.cancel()  # the client went away: nobody to write to
        with contextlib.suppress(asyncio.CancelledError):
            await out
    finally:
        inp.cancel()
        out.cancel()
        h.close()
    return h.response


async def _drain(h: Hijacked) -> None:
    """Without stdin the client's bytes are ignored; EOF (or a hang-up) ends this."""
    while await h.read():
        pass


ROUTES: list[Route] = [("POST", "/containers/{id}/attach", attach)]
