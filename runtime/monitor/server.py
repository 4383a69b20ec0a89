"""The monitor's unix-socket server: request dispatch and process-wide signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from types import ModuleType
from typing import Any

from runtime.monitor import cg, proto, sessions
from runtime.monitor.lifecycle import Lifecycle

log = logging.getLogger("berth.monitor")
REQUEST_LIMIT = 16 << 20
STREAM_OPS = {"attach": sessions.attach, "exec_stream": sessions.exec_stream,
              "events": sessions.events}


class Server:
    """Serves one socket; each request runs as its own task so a slow stop blocks nobody."""

    def __init__(self, state_dir: str, run_dir: str, spawner: ModuleType) -> None:
        self.lc = Lifecycle(state_dir, spawner)
        self.socket_path = os.path.join(run_dir, "monitor.sock")
        self.stopping = asyncio.Event()

    async def serve(self, ready: Any = None) -> None:
        """Recover, bind (0600, path-based), signal readiness, run until SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self.lc.reap)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.lc.reap()
        self.lc.recover()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._conn, self.socket_path,
                                                     limit=REQUEST_LIMIT)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        if ready is not None:
            ready()
        log.info("monitor %d serving %s", os.getpid(), self.socket_path)
        async with server:
            await self.stopping.wait()
        log.info("monitor exiting; containers die with it (PDEATHSIG)")

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    rid = int(req.get("rid", 0))
                except (ValueError, AttributeError):
                    writer.write(proto.encode({"rid": 0, "ok": False, "error": "Error",
                                               "message": "request is not a JSON object"}))
                    break
                op = req.get("op")
                if op in STREAM_OPS:  # takes the connection over until the session ends
                    try:
                        await STREAM_OPS[op](self.lc, req.get("id", ""), req, rid, reader, writer)
                    except Exception as e:
                        writer.write(self._error(rid, e))
                    break
                self.lc.spawn_task(self._request(req, rid, writer))
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _request(self, req: dict[str, Any], rid: int, writer: asyncio.StreamWriter) -> None:
        try:
            result = await self._dispatch(req)
            reply = proto.encode({"rid": rid, "ok": True, "result": result})
        except Exception as e:
            reply = self._error(rid, e)
        if not writer.is_closing():
            writer.write(reply)

    def _error(self, rid: int, e: Exception) -> bytes:
        kind = e.kind if isinstance(e, proto.MonitorError) else "Error"
        if not isinstance(e, proto.MonitorError):
            log.warning("request failed: %r", e)
        return proto.encode({"rid": rid, "ok": False, "error": kind, "message": str(e)})

    async def _dispatch(self, req: dict[str, Any]) -> Any:
        lc, op, cid = self.lc, req.get("op"), str(req.get("id", ""))
        if op == "ping":
            return {"pid": os.getpid(), "version": proto.VERSION, "cgroups": cg.available()}
        if op == "shutdown":  # for tests and uninstall: containers die with the monitor
            asyncio.get_running_loop().call_later(0.05, self.stopping.set)
            return {"pid": os.getpid()}
        if op == "create":
            return lc.create(cid, req["spec"], req["rootfs"], req.get("cgroup_path", ""),
                             req.get("log_path", ""), bool(req.get("tty")),
                             bool(req.get("stdin")), bool(req.get("stdin_once")),
                             req.get("overlay")).to_dict()
        if op == "start":
            return lc.start(cid).to_dict()
        if op == "state":
            return lc.get(cid).st.to_dict()
        if op == "list":
            return [live.st.to_dict() for live in lc.containers.values()]
        if op == "kill":
            lc.kill(cid, int(req.get("signal", signal.SIGTERM)))
            return None
        if op == "stop":
            sig = int(req.get("signal", signal.SIGTERM))
            return (await lc.stop(cid, float(req.get("timeout", 10)), sig)).to_dict()
        if op == "wait":
            live = lc.get(cid)
            await live.exited.wait()
            return live.st.to_dict()
        if op == "delete":
            await lc.delete(cid)
            return None
        if op == "exec_sync":
            return await sessions.exec_sync(lc, cid, req["process"], float(req.get("timeout", 0)),
                                            int(req.get("max_output", sessions.MAX_OUTPUT)))
        if op == "exec_status":
            return await sessions.exec_status(lc, str(req.get("exec_id", "")),
                                              float(req.get("wait", 0)))
        if op == "reopen_log":
            lc.reopen_log(cid)
            return None
        if op == "resize":
            live = lc.get(cid)
            if live.master < 0 or live.exited.is_set():
                raise proto.InvalidState(f"container {cid!r} has no running terminal")
            sessions.set_winsize(live.master, int(req["width"]), int(req["height"]))
            return None
        if op == "update":
            cg.update(lc.get(cid).st.cgroup_path, req.get("resources") or {})
            return None
        if op == "stats":
            return cg.stats(lc.get(cid).st.cgroup_path)
        raise proto.MonitorError(f"unknown op {op!r}")
