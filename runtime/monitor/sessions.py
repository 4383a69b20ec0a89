"""Exec (captured or streamed) and attach: the monitor's connection-bound operations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from typing import Any

from runtime.monitor import proto
from runtime.monitor.fdio import (
    CHUNK,
    FdWriter,
    exit_code,
    kill_tree,
    read_fd,
    set_nonblocking,
    set_winsize,
)
from runtime.monitor.lifecycle import IO_GRACE, Attachment, Lifecycle, Live

MAX_OUTPUT = 16 << 20
KEPT_EXITS = 1024  # streamed execs whose exit a client may still ask for (exec_status)
MAX_STATUS_WAIT = 60.0  # an exec_status request parks no longer than this


def _running(lc: Lifecycle, cid: str) -> Live:
    live = lc.get(cid)
    if live.exited.is_set() or live.st.status != "running":
        raise proto.InvalidState(f"container {cid!r} is not running")
    return live


def _watch_exit(lc: Lifecycle, pid: int) -> asyncio.Future[int]:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def reaped(status: int) -> None:
        if not fut.done():
            fut.set_result(exit_code(status))

    lc.reapers[pid] = reaped
    return fut


def _remember_exit(lc: Lifecycle, exec_id: str, exited: asyncio.Future[int]) -> None:
    """Keep a streamed exec's exit under its client's id: a client whose session broke before
    EXIT (its own connection failed) can still learn how the process ended."""
    lc.exec_exits[exec_id] = exited
    while len(lc.exec_exits) > KEPT_EXITS:
        del lc.exec_exits[next(iter(lc.exec_exits))]


async def exec_status(lc: Lifecycle, exec_id: str, wait: float) -> dict[str, Any]:
    """The exit code of a streamed exec, waiting up to `wait` s for it (None if still
    running). Its session's end kills the process, so after a broken session it comes soon."""
    exited = lc.exec_exits.get(exec_id)
    if exited is None:
        raise proto.NotFound(f"no streamed exec {exec_id!r} (not ours, or forgotten)")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(exited), min(max(wait, 0), MAX_STATUS_WAIT))
    return {"exit_code": exited.result() if exited.done() else None}


async def _collect(fd: int, cap: int, out: bytearray) -> None:
    """Read to EOF, keeping at most cap bytes: the rest is drained and dropped (CVE-2022-31030)."""
    try:
        while data := await read_fd(fd):
            room = cap - len(out)
            if room > 0:
                out += data[:room]
    finally:
        os.close(fd)


async def exec_sync(lc: Lifecycle, cid: str, process: dict[str, Any], timeout: float,
                    max_output: int = MAX_OUTPUT) -> dict[str, Any]:
    """Run a process in the container, capture capped output, honour the deadline regardless of
    who still holds the pipes."""
    live = _running(lc, cid)
    cap = min(max_output, MAX_OUTPUT)
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid = lc.spawner.spawn_exec(live.st.pid, process, stdio=(null, w_out, w_err),
                                    cgroup_path=live.st.cgroup_path or None)
    except BaseException:
        for fd in (r_out, r_err):
            os.close(fd)
        raise
    finally:
        for fd in (null, w_out, w_err):
            os.close(fd)
    exited = _watch_exit(lc, pid)
    for fd in (r_out, r_err):
        set_nonblocking(fd)
    out, err = bytearray(), bytearray()
    readers = asyncio.gather(_collect(r_out, cap, out), _collect(r_err, cap, err))
    deadline = time.monotonic() + timeout if timeout > 0 else None
    timed_out = False
    try:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
        code = await asyncio.wait_for(asyncio.shield(exited), remaining)
        # The process is gone; a background child may keep the pipes open, so bound the wait.
        grace = IO_GRACE if deadline is None else min(IO_GRACE, deadline - time.monotonic())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(readers), max(grace, 0))
    except TimeoutError:
        timed_out = True
        kill_tree(pid)
        code = -1
    if not readers.done():
        readers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readers
    if timed_out:
        with contextlib.suppress(asyncio.TimeoutError):
            code = await asyncio.wait_for(exited, 1.0)
    return {
        "exit_code": code,
        "stdout": base64.b64encode(out).decode(),
        "stderr": base64.b64encode(err).decode(),
        "timed_out": timed_out,
    }


async def _client_input(reader: asyncio.StreamReader, stdin: FdWriter | None,
                        master: int, on_close_stdin: Any) -> None:
    """Apply STDIN / CLOSE_STDIN / RESIZE frames from a client until it disconnects."""
    while (msg := await reader_frame(reader)) is not None:
        kind, payload = msg
        if kind == proto.STDIN and stdin is not None:
            await stdin.write(payload)
        elif kind == proto.CLOSE_STDIN:
            on_close_stdin()
        elif kind == proto.RESIZE and master >= 0:
            size = json.loads(payload)
            set_winsize(master, int(size["width"]), int(size["height"]))


async def reader_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """read_frame, treating a broken client connection as its end."""
    try:
        return await proto.read_frame(reader)
    except (ConnectionError, proto.MonitorError):
        return None


async def attach(lc: Lifecycle, cid: str, args: dict[str, Any], rid: int,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Fan the container's output out to this client too, and feed its input to stdin.

    A created container may be attached before it starts (`docker run`, build steps), so no
    byte of its output is missed."""
    live = lc.get(cid)
    if live.exited.is_set() or live.st.status not in ("created", "running"):
        raise proto.InvalidState(f"container {cid!r} is not running")
    want_stdin = bool(args.get("stdin")) and live.stdin is not None
    att = Attachment(writer, bool(args.get("stdout", True)), bool(args.get("stderr", True)))
    live.attachments.add(att)
    writer.write(proto.encode({"rid": rid, "ok": True, "result": {"tty": live.st.tty}}))

    def close_stdin() -> None:
        if want_stdin and live.st.stdin_once and live.stdin is not None:
            live.stdin.close()

    try:
        await _client_input(reader, live.stdin if want_stdin else None, live.master, close_stdin)
    finally:
        live.attachments.discard(att)
        close_stdin()
        writer.close()


async def _stream_out(fd: int, kind: int, writer: asyncio.StreamWriter) -> None:
    """Exec output to its one client; awaiting drain stalls only this exec when it is slow."""
    try:
        while data := await read_fd(fd):
            if writer.is_closing():
                continue  # keep draining so the exec does not block on a dead client
            writer.write(proto.frame(kind, data))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
    finally:
        os.close(fd)


async def exec_stream(lc: Lifecycle, cid: str, args: dict[str, Any], rid: int,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Interactive exec over this connection (for the streaming server); ends with EXIT."""
    live = _running(lc, cid)
    tty, want_stdin = bool(args.get("tty")), bool(args.get("stdin"))
    ours: list[tuple[int, int]] = []
    theirs: list[int] = []
    master, stdin = -1, None
    if tty:
        master, slave = os.openpty()
        theirs.append(slave)
        stdio = (slave, slave, slave)
        ours.append((master, proto.STDOUT))
        if want_stdin:
            stdin = FdWriter(os.dup(master))
    else:
        if want_stdin:
            r, w = os.pipe()
            stdin = FdWriter(w)
        else:
            r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        theirs.append(r)
        fds = [r]
        for kind in (proto.STDOUT, proto.STDERR):
            pr, pw = os.pipe()
            ours.append((pr, kind))
            theirs.append(pw)
            fds.append(pw)
        stdio = (fds[0], fds[1], fds[2])
    try:
        pid = lc.spawner.spawn_exec(live.st.pid, args["process"], stdio=stdio,
                                    cgroup_path=live.st.cgroup_path or None)
    except BaseException:
        for fd, _ in ours:
            os.close(fd)
        if stdin:
            stdin.abort()
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    exited = _watch_exit(lc, pid)
    if args.get("exec_id"):
        _remember_exit(lc, str(args["exec_id"]), exited)
    for fd, _ in ours:
        set_nonblocking(fd)
    if stdin:
        set_nonblocking(stdin.fd)
    writer.write(proto.encode({"rid": rid, "ok": True, "result": {"pid": pid}}))
    outs = asyncio.gather(*(_stream_out(fd, kind, writer) for fd, kind in ours))
    inp = asyncio.get_running_loop().create_task(
        _client_input(reader, stdin, master, lambda: stdin.close() if stdin else None))
    waiters: set[asyncio.Future[Any]] = {exited, inp}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not exited.done():  # the client went away first: the exec must not outlive its session
        kill_tree(pid)
        await exited
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(outs), IO_GRACE)
    if not outs.done():
        outs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outs
    inp.cancel()
    await asyncio.wait({inp})  # its read must be over before _linger reads the same stream
    if stdin:
        stdin.abort()
    if not writer.is_closing():
        writer.write(proto.frame(proto.EXIT, proto.encode({"exit_code": exited.result()})))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await _linger(reader, writer)
    writer.close()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends until it hangs up.

    The client's stdin EOF (CLOSE_STDIN) often arrives after a short exec has exited. Closing
    a unix socket with unread input resets the client's side (ECONNRESET, or EPIPE on its
    next write), and an asyncio stream reader then raises at once, dropping the output and
    EXIT frames it holds but has not handed out yet: `docker exec -i` printed nothing and
    exited 0. The client closes once it has read EXIT."""
    with contextlib.suppress(ConnectionError, OSError):
        if writer.can_write_eof():
            writer.write_eof()
        while await reader.read(CHUNK):
            pass


async def events(lc: Lifecycle, _cid: str, _args: dict[str, Any], rid: int,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Stream container state changes as JSON lines until the client hangs up."""
    writer.write(proto.encode({"rid": rid, "ok": True, "result": None}))
    lc.subscribers.add(writer)
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    finally:
        lc.subscribers.discard(writer)
