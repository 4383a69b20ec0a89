"""Exec endpoints: create, start (hijacked, or detached), inspect and resize."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dockerapi import model
from dockerapi.hijack import MULTIPLEXED, RAW, STREAM_IDS, Hijacked, frame, hijack
from dockerapi.http import Route, body, front, qint
from dockerapi.model import Front
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime import containers as monitor
from runtime.bundle import Bundle
from runtime.init import InitError
from runtime.procuser import process_user

MAX_EXECS = 1000  # exec records kept per daemon; the oldest finished ones go first
# dockerd's ExitCode for an exec that failed to start or that it could not follow to its end
# (ContainerExecStart's error path, e.g. its attach failed): Running false and 126, never null.
LOST_EXIT = 126


@dataclass
class ExecState:
    id: str
    container_id: str
    process: dict[str, Any]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    user: str = ""  # as given at create, for inspect's ProcessConfig
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    session: monitor.StreamSession | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        args = self.process["args"]
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
                "ProcessConfig": {"tty": self.tty, "entrypoint": args[0],
                                  "arguments": args[1:], "privileged": False,
                                  "user": self.user},
                "OpenStdin": self.stdin, "OpenStderr": self.stderr, "OpenStdout": self.stdout,
                "CanRemove": False, "ContainerID": self.container_id, "DetachKeys": "",
                "Pid": int(self.session.info.get("pid", 0)) if self.session else 0}


def _exec(f: Front, given: str) -> ExecState:
    x = f.execs.get(given)
    if x is None:
        raise NotFound(f"No such exec instance: {given[:100]}")
    return x


def _prune(f: Front) -> None:
    if len(f.execs) < MAX_EXECS:
        return
    for key in [k for k, x in f.execs.items() if x.started and not x.running]:
        del f.execs[key]
        if len(f.execs) < MAX_EXECS // 2:
            break


async def create(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    cfg = await body(request, {})
    if not isinstance(cfg, dict):
        raise InvalidArgument("the request body must be a JSON object")
    cmd = cfg.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
        raise InvalidArgument("No exec command specified")
    env = cfg.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument("Env must be a list of strings")
    st = f.ctx.states.states.get(rec.id)
    if st is None or st.status != "running":
        raise FailedPrecondition(f"Container {rec.id} is not running")
    if rec.id in f.paused:
        raise FailedPrecondition(f"Container {rec.id} is paused, unpause the container "
                                 "before exec")
    process = dict(rec.extra.get("process") or {})
    tty = bool(cfg.get("Tty"))
    process.update(args=list(cmd), terminal=tty)
    if env:
        process["env"] = list(process.get("env", [])) + env
    workdir = cfg.get("WorkingDir") or ""
    if workdir:
        if not isinstance(workdir, str) or not workdir.startswith("/"):
            raise InvalidArgument("WorkingDir must be an absolute path")
        process["cwd"] = workdir
    user = cfg.get("User") or ""
    if user:
        if not isinstance(user, str):
            raise InvalidArgument("User must be a string")
        try:
            uid, gid, groups = process_user(  # dockerd's getUser: the container's --group-add
                str(Bundle(f.ctx.bundle_dir(rec.id)).rootfs), user,
                model.docker(rec).get("host_config", {}).get("GroupAdd") or [],
                image_groups=":" not in user).as_tuple()
        except (InitError, LookupError, ValueError) as exc:
            raise InvalidArgument(f"unable to find user {user}: {exc}") from None
        process["user"] = {"uid": uid, "gid": gid, "additionalGids": groups}
    _prune(f)
    x = ExecState(secrets.token_hex(32), rec.id, process, tty, bool(cfg.get("AttachStdin")),
                  bool(cfg.get("AttachStdout")), bool(cfg.get("AttachStderr")), user)
    f.execs[x.id] = x
    f.publish(rec, f"exec_create: {' '.join(cmd)}", {"execID": x.id})
    return web.json_response({"Id": x.id}, status=201)


async def _run(x: ExecState, h: Hijacked | None, client: monitor.MonitorClient) -> None:
    """Pump the session both ways until the process exits; record its exit code.

    A client that hangs up ends only the copying: the process runs on to its end (as with
    dockerd) and its own exit code is kept. A code nobody can learn (the monitor was lost,
    and the container with it) is LOST_EXIT, never null once the exec has ended."""
    assert x.session is not None
    session = x.session

    async def feed() -> None:
        if h is None:
            return
        while data := await h.read():
            if x.stdin:
                await session.send_stdin(data)
        if x.stdin:
            with contextlib.suppress(ConnectionError):
                await session.close_stdin()

    code: int | None = None
    copying = h is not None
    feeder = asyncio.create_task(feed())
    try:
        with contextlib.suppress(ConnectionError, monitor.MonitorError):
            while (msg := await session.recv()) is not None:
                stream, data = msg
                if h is None or not copying or not (x.stdout if stream == "stdout"
                                                    else x.stderr):
                    continue
                # False once the client has left: the rest of the output is dropped
                copying = await h.write(data if x.tty else frame(STREAM_IDS[stream], data))
        feeder.cancel()
        code = await client.exec_exit(session)
    finally:
        feeder.cancel()
        session.close()
        x.exit_code = LOST_EXIT if code is None else code
        x.running = False


async def start(request: web.Request) -> web.StreamResponse:
    f = front(request)
    x = _exec(f, request.match_info["id"])
    opts = await body(request, {})
    if not isinstance(opts, dict):
        raise InvalidArgument("the request body must be a JSON object")
    if x.started:
        raise FailedPrecondition(f"exec {x.id} has already run")
    rec = f.ctx.store.containers.get(x.container_id)
    st = f.ctx.states.states.get(x.container_id)
    if rec is None or st is None or st.status != "running":
        raise FailedPrecondition(f"Container {x.container_id} is not running")
    try:
        x.session = await f.ctx.monitor.exec_stream(x.container_id, x.process, tty=x.tty,
                                                    stdin=x.stdin)
    except monitor.InvalidState as exc:
        raise FailedPrecondition(str(exc)) from None
    except monitor.MonitorError as exc:  # the process could not start (not found, not runnable)
        return await _failed_start(request, x, bool(opts.get("Detach")), str(exc))
    x.started = x.running = True
    f.publish(rec, "exec_start: " + " ".join(x.process["args"]), {"execID": x.id})
    if opts.get("Detach"):
        f.spawn(_run(x, None, f.ctx.monitor))
        return web.Response(status=200)
    try:
        h = await hijack(request, RAW if x.tty else MULTIPLEXED)
    except BaseException:
        f.spawn(_run(x, None, f.ctx.monitor))  # the exec started: follow it to its exit
        raise
    pump = f.spawn(_run(x, h, f.ctx.monitor))
    try:
        await asyncio.shield(pump)  # a hang-up cancels this handler, never the pump
    finally:
        h.close()
    return h.response


async def _failed_start(request: web.Request, x: ExecState, detach: bool,
                        message: str) -> web.StreamResponse:
    """dockerd's answer: the exec has ended with ExitCode 126; a detached start is a 400, an
    attached one gets the message on its stream (the docker CLI prints it, then exits 126)."""
    x.started, x.exit_code = True, LOST_EXIT
    if detach:
        raise InvalidArgument(message)
    h = await hijack(request, RAW if x.tty else MULTIPLEXED)
    try:
        line = (message + "\r\n").encode()
        await h.write(line if x.tty else frame(STREAM_IDS["stdout"], line))
    finally:
        h.close()
    return h.response


async def inspect(request: web.Request) -> web.StreamResponse:
    return web.json_response(_exec(front(request), request.match_info["id"]).describe())


async def resize(request: web.Request) -> web.StreamResponse:
    x = _exec(front(request), request.match_info["id"])
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    if not (0 < h < 65536 and 0 < w < 65536):
        raise InvalidArgument("resize needs h and w between 1 and 65535")
    if x.session is None or not x.running:
        raise FailedPrecondition(f"exec {x.id} is not running")
    await x.session.resize(w, h)
    return web.Response(status=201)


ROUTES: list[Route] = [
    ("POST", "/containers/{id}/exec", create), ("POST", "/exec/{id}/start", start),
    ("GET", "/exec/{id}/json", inspect), ("POST", "/exec/{id}/resize", resize),
]
