"""Container lifecycle inside the monitor: stdio, spawn, reap, exit status, stop, delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from runtime import hooks
from runtime.logs import CriLogWriter
from runtime.monitor import cg, proto
from runtime.monitor import state as S
from runtime.monitor.fdio import FdWriter, drain_now, exit_code, read_fd, set_nonblocking
from runtime.rootfs import Overlay

log = logging.getLogger("berth.monitor")
VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # it names a directory
IO_GRACE = 1.0  # how long output may trail the exit of the process that wrote it


@dataclass(eq=False)
class Attachment:
    """One attached client; dropped when it falls more than `limit` bytes behind."""

    writer: asyncio.StreamWriter
    stdout: bool
    stderr: bool
    limit: int = 1 << 20

    def send(self, payload: bytes) -> bool:
        """Queue a frame; False means the client is too slow and was cut off."""
        if self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > self.limit:
            self.writer.close()
            return False
        self.writer.write(payload)
        return True


@dataclass(eq=False)
class Live:
    """What the monitor holds for a container besides its durable record."""

    st: S.ContainerState
    spawned: Any = None
    log: CriLogWriter | None = None
    stdin: FdWriter | None = None
    master: int = -1
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    attachments: set[Attachment] = field(default_factory=set)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    oom_base: int = 0
    log_failed: bool = False


class Lifecycle:
    """Owns every container of one state dir; the server maps requests onto these methods."""

    def __init__(self, state_dir: str, spawner: ModuleType) -> None:
        self.state_dir = state_dir
        self.spawner = spawner
        self.containers: dict[str, Live] = {}
        self.reapers: dict[int, Callable[[int], None]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.exec_exits: dict[str, asyncio.Future[int]] = {}  # see sessions.exec_status

    def _save(self, st: S.ContainerState, event: str) -> None:
        """Persist, then tell event subscribers (a subscriber 1 MiB behind is cut off)."""
        if event != "deleted":
            S.save(self.state_dir, st, sync=event == "stopped")
        line = proto.encode({"event": event, "state": st.to_dict()})
        for w in list(self.subscribers):
            if w.is_closing() or w.transport.get_write_buffer_size() > 1 << 20:
                w.close()
                self.subscribers.discard(w)
            else:
                w.write(line)

    # -- reaping ------------------------------------------------------------------------------
    def reap(self) -> None:
        """SIGCHLD: collect every dead child (orphans included, we are a subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handler = self.reapers.pop(pid, None)
            if handler is not None:
                handler(status)

    def spawn_task(self, coro: Any) -> None:
        """Keep a reference so background tasks are not garbage-collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- recovery -----------------------------------------------------------------------------
    def recover(self) -> None:
        """On monitor start: containers of a previous monitor are dead or killed now."""
        for st in S.load_all(self.state_dir):
            if st.status != S.STOPPED:
                if st.pid and S.proc_start_time(st.pid) == st.pid_start:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(st.pid, signal.SIGKILL)
                cg.kill_all(st.cgroup_path)
                st.status, st.exit_code, st.reason = S.STOPPED, 255, S.REASON_MONITOR_LOST
                st.finished_ns = time.time_ns()
                st.message = (
                    "the berth monitor exited while this container was "
                    f"{'running' if st.started_ns else 'created'}; its processes were killed"
                )
                S.save(self.state_dir, st, sync=True)
                log.warning("container %s lost with the previous monitor", st.id)
            live = Live(st)
            live.exited.set()
            self.containers[st.id] = live

    # -- create / start -----------------------------------------------------------------------
    def get(self, cid: str) -> Live:
        """Look up a container or raise NotFound."""
        try:
            return self.containers[cid]
        except KeyError:
            raise proto.NotFound(f"container {cid!r} not found") from None

    def create(self, cid: str, spec: dict[str, Any], rootfs: str, cgroup_path: str,
               log_path: str, tty: bool, stdin: bool, stdin_once: bool,
               overlay: dict[str, Any] | None = None) -> S.ContainerState:
        """Set up stdio and logging, then spawn the process stopped before its exec.

        With `overlay` (runtime.rootfs.Overlay fields) the overlay is mounted on rootfs inside
        the container's own mount namespace, so it vanishes with the container."""
        if not VALID_ID.fullmatch(cid):
            raise proto.InvalidArgument(f"container id {cid!r} is not [A-Za-z0-9_.-], 1-128 chars")
        if bool((spec.get("process") or {}).get("terminal")) != tty:
            raise proto.InvalidArgument("tty must match the spec's process.terminal")
        if cid in self.containers:
            raise proto.AlreadyExists(f"container {cid!r} already exists")
        st = S.ContainerState(cid, created_ns=time.time_ns(), log_path=log_path,
                              cgroup_path=cgroup_path, rootfs=rootfs, tty=tty, stdin=stdin,
                              stdin_once=stdin_once)
        live = Live(st)
        ours: list[int] = []  # monitor-side ends
        theirs: list[int] = []  # container-side ends, closed after the spawn
        try:
            if log_path:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                live.log = CriLogWriter(log_path)
            streams: list[tuple[str, int]] = []
            if tty:
                live.master, slave = os.openpty()
                ours.append(live.master)
                theirs.append(slave)
                stdio = (slave, slave, slave)
                streams.append(("stdout", live.master))
                if stdin:
                    live.stdin = FdWriter(os.dup(live.master))
            else:
                if stdin:
                    r, w = os.pipe()
                    theirs.append(r)
                    live.stdin = FdWriter(w)
                else:
                    r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    theirs.append(r)
                fds = [r]
                for name in ("stdout", "stderr"):
                    pr, pw = os.pipe()
                    ours.append(pr)
                    theirs.append(pw)
                    fds.append(pw)
                    streams.append((name, pr))
                stdio = (fds[0], fds[1], fds[2])
            for fd in ours + ([live.stdin.fd] if live.stdin else []):
                set_nonblocking(fd)
            cg.create(cgroup_path, spec)
            live.oom_base = cg.oom_kills(cgroup_path)
            extra = {"overlay": Overlay(**overlay)} if overlay else {}
            hook_state = hooks.State(cid, str(Path(rootfs).parent),
                                     dict(spec.get("annotations") or {}))
            live.spawned = self.spawner.spawn(spec, rootfs, stdio=stdio,
                                              cgroup_path=cgroup_path or None,
                                              hook_state=hook_state, **extra)
        except BaseException:
            for fd in ours + theirs:
                os.close(fd)
            if live.stdin:
                live.stdin.abort()
            if live.log:
                live.log.close()
            with contextlib.suppress(Exception):  # keep the original error, not the cleanup's
                cg.remove(cgroup_path)
            raise
        for fd in theirs:
            os.close(fd)
        st.pid = live.spawned.pid
        st.pid_start = S.proc_start_time(st.pid)
        live.pumps = [asyncio.get_running_loop().create_task(self._pump(live, name, fd))
                      for name, fd in streams]
        self.reapers[st.pid] = lambda status: self.spawn_task(self._finish(live, status))
        self.containers[cid] = live
        self._save(st, "created")
        S.save_post_hooks(self.state_dir, cid, hook_state, spec.get("hooks") or {})
        return st

    def start(self, cid: str) -> S.ContainerState:
        """Let the created process exec its entrypoint."""
        live = self.get(cid)
        if live.st.status != S.CREATED or live.exited.is_set():
            raise proto.InvalidState(f"container {cid!r} is {live.st.status}, not created")
        try:
            live.spawned.start()
        except Exception as e:
            live.st.message = f"start failed: {e}"
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.st.pid, signal.SIGKILL)
            raise proto.MonitorError(f"container {cid!r}: {e}") from e
        live.st.status, live.st.started_ns = S.RUNNING, time.time_ns()
        self._save(live.st, "started")
        self._post_hooks(cid, "poststart", S.load_post_hooks(self.state_dir, cid), live.st.pid)
        return live.st

    @staticmethod
    def _post_hooks(cid: str, kind: str,
                    post: tuple[hooks.State, dict[str, list[hooks.Hook]]] | None,
                    pid: int = 0) -> None:
        """poststart and poststop: a failure is logged, the operation has happened anyway."""
        if post is None:
            return
        state, parsed = post
        try:
            hooks.run_all(kind, parsed, state.encode(
                "running" if kind == "poststart" else "stopped", pid), state.bundle)
        except hooks.HookError as e:
            log.warning("container %s: %s", cid, e)

    # -- output -------------------------------------------------------------------------------
    async def _pump(self, live: Live, stream: str, fd: int) -> None:
        """Copy one output stream to the CRI log and to every attached client."""
        kind = proto.STDOUT if stream == "stdout" else proto.STDERR
        try:
            while data := await read_fd(fd):
                self._deliver(live, stream, kind, data)
        finally:
            for data in drain_now(fd):
                self._deliver(live, stream, kind, data)
            self._log_op(live, lambda w: w.flush(stream))
            os.close(fd)

    def _log_op(self, live: Live, op: Callable[[CriLogWriter], None]) -> None:
        """A full disk or a removed log dir drops output; it must never stop the pumps."""
        if live.log is None:
            return
        try:
            op(live.log)
        except OSError as e:
            if not live.log_failed:  # warn once, not once per chunk
                log.warning("container %s: log write failed (output dropped): %s", live.st.id, e)
            live.log_failed = True

    def _deliver(self, live: Live, stream: str, kind: int, data: bytes) -> None:
        self._log_op(live, lambda w: w.write(stream, data))
        if live.attachments:
            payload = proto.frame(kind, data)
            for att in list(live.attachments):
                wanted = att.stdout if kind == proto.STDOUT else att.stderr
                if wanted and not att.send(payload):
                    live.attachments.discard(att)

    # -- exit ---------------------------------------------------------------------------------
    async def _finish(self, live: Live, status: int) -> None:
        """Reaped: let trailing output drain, work out why it exited, persist, wake waiters."""
        st = live.st
        st.finished_ns = time.time_ns()
        if live.pumps:
            _, pending = await asyncio.wait(live.pumps, timeout=IO_GRACE)
            if pending:  # something outside the process still holds the pipes
                cg.kill_all(st.cgroup_path)
                _, pending = await asyncio.wait(pending, timeout=IO_GRACE)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        st.exit_code = exit_code(status)
        ooms = cg.oom_kills(st.cgroup_path) - live.oom_base
        if st.exit_code != 0 and ooms > 0:
            st.reason, st.message = S.REASON_OOM, f"{ooms} process(es) killed by the OOM killer"
        elif st.exit_code == 0:
            st.reason = S.REASON_COMPLETED
        else:
            st.reason = S.REASON_ERROR
        if not st.started_ns:
            st.message = st.message or "the process exited before it was started"
        st.status = S.STOPPED
        live.spawned.close()  # sync pipes of a container that was never started
        live.spawned.close_pidfd()
        self.spawner.forget(st.pid)
        self._close_io(live)
        self._save(st, "stopped")
        live.exited.set()

    def _close_io(self, live: Live) -> None:
        if live.stdin:
            live.stdin.abort()
        if live.master >= 0:
            live.master = -1  # the stdout pump owns and closed the fd
        self._log_op(live, CriLogWriter.close)
        live.log = None
        exit_frame = proto.frame(proto.EXIT, proto.encode({"exit_code": live.st.exit_code}))
        for att in live.attachments:
            if not att.writer.is_closing():
                att.writer.write(exit_frame)
                att.writer.close()
        live.attachments.clear()

    # -- stop / kill / delete -----------------------------------------------------------------
    def kill(self, cid: str, sig: int) -> None:
        """Deliver a signal to the container's init process."""
        live = self.get(cid)
        if live.exited.is_set():
            raise proto.InvalidState(f"container {cid!r} is not running")
        os.kill(live.st.pid, sig)

    async def stop(self, cid: str, timeout: float, sig: int = signal.SIGTERM) -> S.ContainerState:
        """Signal, wait up to timeout, then SIGKILL the init; either way everything else in the
        cgroup (execs, their children, a shared pid namespace's strays) is killed and gone, or
        named in the error, before the container is reported stopped."""
        live = self.get(cid)
        if not live.exited.is_set() and timeout > 0 and live.st.status == S.RUNNING:
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.st.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.exited.wait(), timeout)
        if not live.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.st.pid, signal.SIGKILL)
        await self._drain(live)
        await live.exited.wait()
        return live.st

    async def _drain(self, live: Live) -> None:
        """Kill whatever is left in the container's cgroup; InvalidState names what outlived
        the bound (a process stuck in the kernel), never a bare EBUSY."""
        left = await cg.drain(live.st.cgroup_path)
        if left:
            raise proto.InvalidState(
                f"container {live.st.id!r}: {len(left)} process(es) still in its cgroup "
                f"{cg.DRAIN_TIMEOUT:g} s after SIGKILL: {cg.describe(left)}; try again later")

    async def delete(self, cid: str) -> None:
        """Forget a stopped (or never started) container: cgroup, state dir, nothing else."""
        live = self.get(cid)
        if live.st.status == S.RUNNING and not live.exited.is_set():
            raise proto.InvalidState(f"container {cid!r} is running; stop it first")
        if not live.exited.is_set():  # created, never started: its process waits for start()
            await self.stop(cid, 0)
        await self._drain(live)  # an exec started after the stop, or a straggler
        if self.containers.get(cid) is not live:
            return  # a concurrent delete won
        try:
            cg.remove(live.st.cgroup_path)
        except OSError as e:
            raise proto.InvalidState(f"container {cid!r}: its cgroup could not be removed "
                                     f"({e.strerror}); try again") from None
        del self.containers[cid]
        post = S.load_post_hooks(self.state_dir, cid)
        S.remove(self.state_dir, cid)
        self._save(live.st, "deleted")
        self._post_hooks(cid, "poststop", post)

    def reopen_log(self, cid: str) -> None:
        """ReopenContainerLog: start a fresh file at the log path; never waits on the process."""
        live = self.get(cid)
        if live.exited.is_set() or live.log is None:
            raise proto.InvalidState(f"container {cid!r} is not running")
        live.log.reopen()
