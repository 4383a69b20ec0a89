"""Non-blocking fd plumbing on the monitor's single event loop (no threads, so fork stays safe)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path

CHUNK = 64 * 1024
STDIN_LIMIT = 1 << 20


def set_nonblocking(fd: int) -> None:
    """Our ends of container pipes must never block the loop."""
    os.set_blocking(fd, False)


async def wait_readable(fd: int) -> None:
    """Park until fd is readable; one-shot registration keeps the selector small."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_fd(fd: int, size: int = CHUNK) -> bytes:
    """Next chunk, or b"" at end of stream (EIO is how a pty master reports a hung-up slave).

    Always yields to the loop once: a stream that never runs dry would otherwise monopolise
    the one thread that serves every container."""
    while True:
        try:
            data = os.read(fd, size)
            await asyncio.sleep(0)
            return data
        except BlockingIOError:
            await wait_readable(fd)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


def drain_now(fd: int) -> list[bytes]:
    """Whatever is already buffered, without waiting; used once the writer side is gone."""
    out: list[bytes] = []
    while True:
        try:
            data = os.read(fd, CHUNK)
        except (BlockingIOError, OSError):
            return out
        if not data:
            return out
        out.append(data)


class FdWriter:
    """Feeds a container's stdin; callers await write() so a stdin that is not read stalls them."""

    def __init__(self, fd: int, limit: int = STDIN_LIMIT) -> None:
        self.fd = fd
        self.limit = limit
        self.buf = bytearray()
        self.closing = False
        self.drained = asyncio.Event()
        self.drained.set()

    async def write(self, data: bytes) -> None:
        """Queue data; wait while more than `limit` bytes are pending."""
        if self.fd < 0 or self.closing:
            return
        self.buf += data
        self._flush()
        while self.fd >= 0 and len(self.buf) > self.limit:
            self.drained.clear()
            await self.drained.wait()

    def _flush(self) -> None:
        try:
            while self.buf:
                n = os.write(self.fd, self.buf)
                del self.buf[:n]
        except BlockingIOError:
            asyncio.get_running_loop().add_writer(self.fd, self._on_writable)
            return
        except OSError:  # EPIPE: the reader is gone, so is everything we held for it
            self.buf.clear()
            self._really_close()
            return
        if self.closing:
            self._really_close()
        self.drained.set()

    def _on_writable(self) -> None:
        asyncio.get_running_loop().remove_writer(self.fd)
        self._flush()

    def close(self) -> None:
        """Close once the pending bytes are written (stdin_once, or CLOSE_STDIN from a client)."""
        self.closing = True
        if not self.buf:
            self._really_close()

    def abort(self) -> None:
        """Close now, dropping anything pending (the container is gone)."""
        self.buf.clear()
        self._really_close()

    def _really_close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1
        self.drained.set()


def set_winsize(fd: int, width: int, height: int) -> None:
    """TIOCSWINSZ on a pty master; the kernel sends SIGWINCH to the foreground group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def descendants(root: int) -> list[int]:
    """Pids below root in the process tree, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "stat").read_bytes()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant we can still see."""
    victims = descendants(pid)
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target()
    for child in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def exit_code(status: int) -> int:
    """Shell convention: 128+signal for a signalled process."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255
