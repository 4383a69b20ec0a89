"""berthd's typed client for the container monitor; never forks, safe in threaded callers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime.monitor import proto
from runtime.monitor.launch import launch
from runtime.monitor.proto import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    MonitorError,
    NotFound,
)
from runtime.monitor.state import ContainerState

__all__ = ["AlreadyExists", "ContainerEvent", "ContainerState", "ExecResult", "InvalidArgument",
           "InvalidState",
           "MonitorClient", "MonitorError", "NotFound", "StreamSession", "ensure_monitor"]
MAX_OUTPUT = 16 << 20
PING_TIMEOUT = 30.0
EXIT_WAIT = 10.0  # for the exit of an exec whose session broke: the monitor kills it then


@dataclass(frozen=True)
class ExecResult:
    """ExecSync outcome; output is already truncated to max_output per stream."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool


@dataclass(frozen=True)
class ContainerEvent:
    """A state change: kind is created, started, stopped or deleted."""

    kind: str
    state: ContainerState


class StreamSession:
    """An attach or streaming exec: frames both ways over a dedicated connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 info: dict[str, Any]) -> None:
        self.reader, self.writer, self.info = reader, writer, info
        self.exit_code: int | None = None
        self.exec_id = ""  # a streamed exec's name at the monitor, for exec_exit()

    async def send_stdin(self, data: bytes) -> None:
        """Feed stdin, in frames the monitor accepts."""
        for i in range(0, len(data), proto.MAX_FRAME):
            self.writer.write(proto.frame(proto.STDIN, data[i : i + proto.MAX_FRAME]))
        await self.writer.drain()

    async def close_stdin(self) -> None:
        """EOF on stdin (closes a stdin_once container's stdin)."""
        self.writer.write(proto.frame(proto.CLOSE_STDIN))
        await self.writer.drain()

    async def resize(self, width: int, height: int) -> None:
        """Terminal size for the tty behind this session."""
        self.writer.write(proto.frame(proto.RESIZE, json.dumps(
            {"width": width, "height": height}).encode()))
        await self.writer.drain()

    async def recv(self) -> tuple[str, bytes] | None:
        """Next ("stdout"|"stderr", data); None once the process exited or the monitor left."""
        msg = await proto.read_frame(self.reader)
        if msg is None:
            return None
        kind, payload = msg
        if kind == proto.EXIT:
            self.exit_code = int(json.loads(payload)["exit_code"])
            return None
        return ("stdout" if kind == proto.STDOUT else "stderr", payload)

    def close(self) -> None:
        """Detach (an exec session's process is killed by the monitor)."""
        self.writer.close()


class MonitorClient:
    """asyncio client; requests are multiplexed on one connection, re-dialled after a failure."""

    def __init__(self, socket_path: str,
                 relaunch: Callable[[], Awaitable[object]] | None = None) -> None:
        self.socket_path = socket_path
        self._relaunch = relaunch
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _dial(self, limit: int = proto.MAX_LINE
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect; a dead monitor (refused or missing socket) is started again if we may."""
        try:
            return await asyncio.open_unix_connection(self.socket_path, limit=limit)
        except (FileNotFoundError, ConnectionRefusedError):
            if self._relaunch is None:
                raise
        await self._relaunch()
        return await asyncio.open_unix_connection(self.socket_path, limit=limit)

    async def _connection(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                reader, self._writer = await self._dial()
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                fut = self._pending.pop(int(msg.get("rid", 0)), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            if self._writer is not None:
                self._writer.close()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("monitor connection lost"))
            self._pending.clear()

    async def call(self, op: str, **args: Any) -> Any:
        """One request; raises the typed MonitorError subclass the monitor named.

        ConnectionError means the outcome is unknown (the monitor went away): check state().
        """
        writer = await self._connection()
        rid = next(self._rids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            writer.write(proto.encode({"rid": rid, "op": op, **args}))
            await writer.drain()
            return _unwrap(await fut)
        finally:
            self._pending.pop(rid, None)  # a cancelled call leaves nothing behind

    async def close(self) -> None:
        """Drop the connection; the monitor and its containers keep running."""
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await self._reader_task

    async def shutdown(self) -> None:
        """End the monitor (tests, uninstall). Its containers are killed with it (PDEATHSIG)."""
        pid = int((await self.call("shutdown"))["pid"])
        with contextlib.suppress(Exception):
            await self.close()
        while os.path.exists(f"/proc/{pid}") and not _zombie(pid):
            await asyncio.sleep(0.02)

    async def ping(self) -> dict[str, Any]:
        """Monitor pid and capabilities."""
        return dict(await self.call("ping"))

    async def create(self, id: str, spec: dict[str, Any], rootfs: str, cgroup_path: str = "",
                     log_path: str = "", tty: bool = False, stdin: bool = False,
                     stdin_once: bool = False,
                     overlay: dict[str, Any] | None = None) -> ContainerState:
        """Create the container's process, stopped before it execs the entrypoint.

        `overlay` ({"lowerdirs": [...], "upperdir": ..., "workdir": ...}) is mounted on rootfs
        inside the container's mount namespace: nothing to unmount on the host afterwards."""
        return ContainerState.from_dict(await self.call(
            "create", id=id, spec=spec, rootfs=rootfs, cgroup_path=cgroup_path,
            log_path=log_path, tty=tty, stdin=stdin, stdin_once=stdin_once, overlay=overlay))

    async def start(self, id: str) -> ContainerState:
        """Let it exec its entrypoint."""
        return ContainerState.from_dict(await self.call("start", id=id))

    async def state(self, id: str) -> ContainerState:
        """Current record."""
        return ContainerState.from_dict(await self.call("state", id=id))

    async def list(self) -> list[ContainerState]:
        """Every container of this state dir."""
        return [ContainerState.from_dict(d) for d in await self.call("list")]

    async def kill(self, id: str, sig: int = signal.SIGTERM) -> None:
        """Signal the init process."""
        await self.call("kill", id=id, signal=int(sig))

    async def stop(self, id: str, timeout: float, sig: int = signal.SIGTERM) -> ContainerState:
        """sig, then SIGKILL after timeout seconds; returns the stopped record."""
        return ContainerState.from_dict(await self.call("stop", id=id, timeout=timeout,
                                                        signal=int(sig)))

    async def wait(self, id: str) -> ContainerState:
        """Block until the container has exited."""
        return ContainerState.from_dict(await self.call("wait", id=id))

    async def delete(self, id: str) -> None:
        """Remove a stopped or never-started container (cgroup and state; not rootfs or log)."""
        await self.call("delete", id=id)

    async def exec_sync(self, id: str, process: dict[str, Any], timeout: float,
                        max_output: int = MAX_OUTPUT) -> ExecResult:
        """Run to completion with captured, capped output; timeout 0 means none."""
        r = await self.call("exec_sync", id=id, process=process, timeout=timeout,
                            max_output=max_output)
        return ExecResult(int(r["exit_code"]), base64.b64decode(r["stdout"]),
                          base64.b64decode(r["stderr"]), bool(r["timed_out"]))

    async def reopen_log(self, id: str) -> None:
        """Start a new log file at the container's log path."""
        await self.call("reopen_log", id=id)

    async def resize(self, id: str, width: int, height: int) -> None:
        """Resize the container's tty."""
        await self.call("resize", id=id, width=width, height=height)

    async def update(self, id: str, resources: dict[str, Any]) -> None:
        """New cgroup limits, in OCI linux.resources form."""
        await self.call("update", id=id, resources=resources)

    async def stats(self, id: str) -> dict[str, Any]:
        """cgroup usage figures."""
        return dict(await self.call("stats", id=id))

    async def _session(self, op: str, **args: Any) -> StreamSession:
        reader, writer = await self._dial(2 * proto.MAX_FRAME)  # streams: little read-ahead
        writer.write(proto.encode({"rid": 1, "op": op, **args}))
        await writer.drain()
        line = await reader.readline()
        if not line:
            writer.close()
            raise ConnectionError("monitor closed the stream connection")
        try:
            info = _unwrap(json.loads(line))
        except MonitorError:
            writer.close()
            raise
        return StreamSession(reader, writer, info or {})

    async def events(self, subscribed: asyncio.Event | None = None
                     ) -> AsyncIterator[ContainerEvent]:
        """State changes from now on; ends if the monitor goes (or drops a slow reader): then
        resync with list(). `subscribed` is set once no later change can be missed."""
        session = await self._session("events")
        if subscribed is not None:
            subscribed.set()
        try:
            while line := await session.reader.readline():
                msg = json.loads(line)
                yield ContainerEvent(msg["event"], ContainerState.from_dict(msg["state"]))
        finally:
            session.close()

    async def attach(self, id: str, stdin: bool = False, stdout: bool = True,
                     stderr: bool = True) -> StreamSession:
        """Join the running container's stdio; output keeps going to the log meanwhile."""
        return await self._session("attach", id=id, stdin=stdin, stdout=stdout, stderr=stderr)

    async def exec_stream(self, id: str, process: dict[str, Any], tty: bool = False,
                          stdin: bool = False) -> StreamSession:
        """Interactive exec; the session's exit_code is set when recv() returns None after
        EXIT. A session that ends otherwise leaves it None: ask exec_exit()."""
        exec_id = secrets.token_hex(16)
        session = await self._session("exec_stream", id=id, process=process, tty=tty,
                                      stdin=stdin, exec_id=exec_id)
        session.exec_id = exec_id
        return session

    async def exec_exit(self, session: StreamSession, wait: float = EXIT_WAIT) -> int | None:
        """The exit code of a finished streamed exec: its EXIT frame's, else the monitor's
        record (the session is closed first, so the monitor kills a process still running).
        None when nobody can know: the monitor that ran it is gone, and the container with it."""
        if session.exit_code is not None or not session.exec_id:
            return session.exit_code
        session.close()
        try:
            r = await asyncio.wait_for(self.call("exec_status", exec_id=session.exec_id,
                                                 wait=wait), wait + PING_TIMEOUT)
        except (MonitorError, OSError, TimeoutError):  # OSError: the dial or connection failed
            return None
        return None if r.get("exit_code") is None else int(r["exit_code"])


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"


def _unwrap(msg: dict[str, Any]) -> Any:
    if msg.get("ok"):
        return msg.get("result")
    raise proto.ERRORS.get(msg.get("error", ""), MonitorError)(msg.get("message", "failed"))


async def ensure_monitor(state_dir: str, run_dir: str,
                         spawner: str | None = None) -> MonitorClient:
    """Connect to the state dir's monitor, starting it if none answers (now or later on).

    `spawner` names the module providing spawn/spawn_exec (default runtime.init)."""
    client = MonitorClient(os.path.join(run_dir, "monitor.sock"), lambda: asyncio.to_thread(
        launch, state_dir, run_dir, spawner))
    try:
        await asyncio.wait_for(client.ping(), PING_TIMEOUT)
    except TimeoutError:
        await client.close()
        raise MonitorError(f"the monitor on {client.socket_path} does not answer") from None
    return client
