"""The unpack worker processes a pull hands its layers to (`unpack_child` is the other end).

One worker per unpack slot, started once a pull shows many files and let go LINGER seconds after
the last pull ends, so an idle node keeps none. A worker's imports take ~90 ms of CPU: two of
them cost a pull of a few big files more than the unpack in berthd they would save, so such a
pull never starts them. A worker says when its imports are done (READY); until then the layers
unpack in berthd (`Pull._unpack`).

A worker is a plain `python -m runtime.images.unpack_worker` child started with subprocess
(exec, never a bare fork of this threaded daemon); it exits when its socket closes, so it never
outlives berthd. Its command line names the snapshot root, so `ps` and the memory benches see
whose it is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from runtime.images.unpack import Detached, UnpackError
from runtime.images.unpack_child import READY, decode

LINGER = 10.0  # seconds the workers stay after the last pull: a burst of pulls reuses them


@dataclass
class _Worker:
    popen: subprocess.Popen[bytes]
    sock: socket.socket
    conn: Connection
    ready: bool = False  # its imports are done (it sent READY)

    def is_ready(self) -> bool:
        """Whether it has said READY, without waiting."""
        if not self.ready:
            with contextlib.suppress(BlockingIOError):
                self.ready = self.sock.recv(1, socket.MSG_DONTWAIT) == READY
        return self.ready

    def wait_ready(self) -> None:
        """Wait for its READY."""
        if not self.ready:
            with contextlib.suppress(OSError):
                self.ready = self.sock.recv(1) == READY
            if not self.ready:
                raise self._died()

    def ask(self, fds: list[int], req: dict[str, Any]) -> None:
        try:
            socket.send_fds(self.sock, [b"\0"], fds)
            self.conn.send_bytes(json.dumps(req).encode())
        except OSError:
            raise self._died() from None

    def answer(self) -> tuple[dict[str, Any], list[int]]:
        """The reply, and the fds of the files to flush that follow a good one."""
        try:
            reply: dict[str, Any] = json.loads(self.conn.recv_bytes())
            fds: list[int] = []
            want = int(reply.get("fds", 0))
            if want:
                _msg, fds, _flags, _addr = socket.recv_fds(self.sock, 1, want)
                if not fds:
                    raise EOFError
        except (EOFError, OSError):
            raise self._died() from None
        return reply, fds

    def _died(self) -> UnpackError:
        self.stop()
        return UnpackError(f"the unpack worker exited (status {self.popen.returncode})")

    def stop(self) -> None:
        """Close its socket, which ends it, and reap it."""
        self.conn.close()
        self.sock.close()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class UnpackProcs:
    """The workers of one image store; at most `size` (the store's unpack slots) at once."""

    def __init__(self, size: int, label: str) -> None:
        self.size, self.label = size, label
        self._idle: list[_Worker] = []
        self._alive = 0
        self._closed = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """A pull begins: workers may start again (after close)."""
        self._closed = False

    def warm(self) -> None:
        """Start workers up to size, for a pull that shows many files. A start that fails here
        (out of fds or memory) leaves the layers to unpack in berthd."""
        with self._lock, contextlib.suppress(OSError):
            while self._alive < self.size and not self._closed:
                self._idle.append(self._start())

    def stop_idle(self) -> None:
        """Stop the workers no layer uses now (a pull that starts meanwhile starts its own)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
        for w in idle:
            w.stop()

    def close(self) -> None:
        """Idle workers stop now, busy ones when their layer is done (until a pull warms the
        pool again)."""
        self._closed = True
        self.stop_idle()

    def _start(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "runtime.images.unpack_worker", str(theirs.fileno()),
                 self.label],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._alive += 1
        return _Worker(popen, ours, Connection(os.dup(ours.fileno())))

    @contextlib.contextmanager
    def _worker(self, start: bool) -> Iterator[_Worker | None]:
        """A ready idle worker, else (when start) one still starting or a new one, waited for;
        else None. Back to idle after a layer that went well."""
        with self._lock:
            for dead in [w for w in self._idle if w.popen.poll() is not None]:
                self._alive -= 1  # died while idle (killed by hand, or the OOM killer)
                self._idle.remove(dead)
                dead.stop()
            w = next((w for w in self._idle if w.is_ready()), None)
            if w is None and start:
                w = self._idle[0] if self._idle else self._start()
            if w is not None and w in self._idle:
                self._idle.remove(w)
        if w is None:
            yield None
            return
        ok = False
        try:
            w.wait_ready()
            yield w
            ok = True
        finally:
            with self._lock:
                keep = ok and not self._closed and w.popen.poll() is None
                if keep:
                    self._idle.append(w)
                else:
                    self._alive -= 1
            if not keep:
                w.stop()

    @contextlib.contextmanager
    def idle(self) -> Iterator[Streamer | None]:
        """A ready idle worker to unpack one streamed layer with, or None: waiting for one
        to start costs a pull more than unpacking the layer in berthd."""
        with self._worker(start=False) as wk:
            yield None if wk is None else functools.partial(_unpack_stream, wk)

    def unpack_file(self, fd: int, root: str, lock: int, media_type: str, max_bytes: int
                    ) -> tuple[Detached, str]:
        """Unpack a stored blob from fd; also its digest, as the worker hashed it."""
        with self._worker(start=True) as wk:
            assert wk is not None
            wk.ask([fd, lock], _request(root, media_type, max_bytes, True))
            reply, kept = wk.answer()
        return _result(reply, kept, root, max_bytes), str(reply.get("input_digest"))


Streamer = Callable[[int, Callable[[int], None], str, int, str, int], Detached]


def _unpack_stream(wk: _Worker, fd: int, follow: Callable[[int], None], root: str, lock: int,
                   media_type: str, max_bytes: int) -> Detached:
    """Unpack a blob while it downloads into the file behind fd: follow writes each new length
    of it to the pipe fd it is given. lock: the snapshot dir's, which the worker holds too while
    it writes there. An error of follow's own (an abandoned or bad download) wins over the
    worker's."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        wk.ask([fd, lock, r], _request(root, media_type, max_bytes, False))
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    fed: BaseException | None = None
    try:
        follow(w)
    except BrokenPipeError:
        pass  # the worker stopped reading: its reply says why
    except BaseException as e:
        fed = e
    finally:
        os.close(w)
    reply, kept = wk.answer()
    if fed is not None:
        _close(kept)
        raise fed
    return _result(reply, kept, root, max_bytes)


def _request(root: str, media_type: str, max_bytes: int, hashed: bool) -> dict[str, Any]:
    return {"root": root, "media_type": media_type, "max_bytes": max_bytes, "hash": hashed}


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _result(reply: dict[str, Any], kept: list[int], root: str, cap: int) -> Detached:
    """The reply as the Detached it stands for (kept: its files to flush, the Detached's from
    now on), or the error it carries raised again."""
    if reply.get("ok"):
        return decode(reply, root, cap, kept)
    message = str(reply.get("message"))
    if reply.get("kind") == "os":
        raise OSError(int(reply["errno"]), message, reply.get("filename"))
    if reply.get("kind") == "unpack":
        raise UnpackError(message)
    raise UnpackError(f"unpack worker: {message}")
