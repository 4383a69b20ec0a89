"""GET /containers/{id}/logs: the container's log file in Docker's stream framing.

The monitor writes CRI log records (`<time> <stream> <P|F> <text>`); Docker clients get the
text back, multiplexed (8-byte headers) unless the container has a TTY, optionally with the
timestamps, from `since`, the last `tail` lines, and, with follow, new lines as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web

from dockerapi import model
from dockerapi.hijack import MULTIPLEXED, RAW, STREAM_IDS, frame
from dockerapi.http import Route, front, qbool
from dockerapi.model import Front
from engine.errors import InvalidArgument
from engine.store import ContainerRecord
from runtime import logs as crilog

FOLLOW_POLL = 0.05  # s between looks at a followed log that has not grown
READ_CHUNK = 1 << 16


def _since(value: str) -> int:
    """Docker sends seconds, possibly with a fraction; returned in ns."""
    try:
        return int(float(value) * 1_000_000_000) if value else 0
    except ValueError:
        raise InvalidArgument(f"invalid since value: {value[:50]}") from None


async def records(path: str, follow: bool, done: asyncio.Event | None,
                  start: int = 0) -> AsyncIterator[tuple[crilog.LogRecord, int]]:
    """Each record with the offset after it; with follow, waits for more until `done`."""
    offset, pending = start, b""
    while True:
        # a stat on the loop is microseconds; only a file that grew costs a thread hop, so
        # a thousand idle followers stay cheap
        data = b""
        if size(path) > offset:
            with contextlib.suppress(FileNotFoundError):
                data = await asyncio.to_thread(_read, path, offset)
        offset += len(data)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                yield crilog.parse_line(line), offset - len(pending)
            except ValueError:
                continue
        if data:
            continue
        if not follow or (done is not None and done.is_set()):
            return
        if done is None:
            await asyncio.sleep(FOLLOW_POLL)
        else:  # an exit wakes us at once for the last read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), FOLLOW_POLL)


def _read(path: str, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(READ_CHUNK)


def size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def stopped_event(f: Front, rec: ContainerRecord) -> asyncio.Event:
    """Set once the container is not running; followers stop after draining the file."""
    done = asyncio.Event()
    st = f.ctx.states.states.get(rec.id)
    if st is None or st.status != "running":
        done.set()
    else:
        fut = f.waiter(rec.id, "stopped")
        fut.add_done_callback(lambda _f: done.set())
    return done


async def _tail_offset(path: str, tail: int) -> int:
    """Offset of the last `tail` full records (lines), read backwards in blocks."""
    def scan() -> int:
        try:
            with open(path, "rb") as fh:
                end = fh.seek(0, os.SEEK_END)
                pos, seen = end, 0
                while pos > 0:
                    step = min(READ_CHUNK, pos)
                    pos -= step
                    fh.seek(pos)
                    block = fh.read(step)
                    for i in range(len(block) - 1, -1, -1):
                        if block[i] == 10 and pos + i != end - 1:
                            seen += 1
                            if seen == tail:
                                return pos + i + 1
                return 0
        except FileNotFoundError:
            return 0
    return await asyncio.to_thread(scan)


async def get(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    want = {s for s in ("stdout", "stderr") if qbool(request, s)}
    if not want:
        raise InvalidArgument("You must choose at least one stream")
    follow, stamps = qbool(request, "follow"), qbool(request, "timestamps")
    since, until = _since(request.query.get("since", "")), _since(request.query.get("until", ""))
    tail_raw = request.query.get("tail", "all") or "all"
    if tail_raw != "all" and not tail_raw.lstrip("-").isdigit():
        raise InvalidArgument(f"invalid tail value: {tail_raw[:50]}")
    tail = -1 if tail_raw == "all" or int(tail_raw) < 0 else int(tail_raw)
    tty = bool(model.docker(rec).get("tty"))
    path = rec.extra.get("log_path", "")
    resp = web.StreamResponse(headers={"Content-Type": RAW if tty else MULTIPLEXED})
    await resp.prepare(request)
    if tail == 0 and not follow:
        return resp
    start = await _tail_offset(path, tail) if tail > 0 else (size(path) if tail == 0 else 0)
    done = stopped_event(f, rec)
    line = b""
    async for r, _ in records(path, follow, done, start):
        if r.stream not in want:
            continue
        ts = crilog.parse_timestamp(r.timestamp)
        if since and ts < since or until and ts > until:
            continue
        text = r.content if r.partial else r.content + b"\n"
        if stamps and not line:
            text = r.timestamp.encode() + b" " + text
        line = text if r.partial else b""
        await resp.write(text if tty else frame(STREAM_IDS[r.stream], text))
    return resp


ROUTES: list[Route] = [("GET", "/containers/{id}/logs", get)]
