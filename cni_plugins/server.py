"""Warm plugin server: the C launchers hand it each CNI call, so no call pays Python start-up.

Single-threaded on purpose: each accepted call gets a worker forked from this warm process
(safe only without threads), which takes the caller's stdio, cwd, environment and umask and
runs the plugin's main() exactly as the Python executable would. Namespace switches happen in
workers only. No spare waits ahead of time: a forked spare is a second ~12 MiB process for the
node, a fork on the call path ~1 ms.
"""

from __future__ import annotations

import _ctypes  # noqa: F401 - preloaded: lean.setns in every worker needs it
import argparse
import array
import contextlib
import fcntl
import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
import traceback
from dataclasses import dataclass

from cni_plugins import bridge, host_local, lean, loopback, nl, portmap, skel, vxlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_SOCKET = "/run/berth/cni-plugins.sock"
PROTO = b"berth-cni/1"
MAX_REQUEST = 65536
N_FDS = 5  # stdin, stdout, stderr, cwd, the caller's netns
MAINS: dict[str, Callable[[], int]] = {
    "bridge": bridge.main,
    "host-local": host_local.main,
    "loopback": loopback.main,
    "portmap": portmap.main,
    "vxlan": vxlan.main,
}


@dataclass
class Request:
    """One decoded call; fds are ours to close."""

    plugin: str
    umask: int
    env: dict[str, str]
    fds: list[int]


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def read_request(conn: socket.socket) -> Request:
    """Only a root peer (same uid as us), one of our plugins, within the size cap."""
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    msg, ancdata, flags, _addr = conn.recvmsg(
        MAX_REQUEST, socket.CMSG_SPACE(N_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds = _received_fds(ancdata)
    try:
        if uid != os.getuid():
            raise ValueError(f"peer uid {uid} refused")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != N_FDS:
            raise ValueError("request too large or without its file descriptors")
        fields = msg.split(b"\0")
        if len(fields) < 4 or fields[0] != PROTO or fields[-1] != b"":
            raise ValueError("malformed request")
        plugin = fields[1].decode()
        if plugin not in MAINS:
            raise ValueError(f"unknown plugin {plugin!r}")
        env: dict[str, str] = {}
        for entry in fields[3:-1]:
            key, sep, val = entry.decode("utf-8", "surrogateescape").partition("=")
            if sep:
                env[key] = val
        return Request(plugin, int(fields[2], 8), env, fds)
    except Exception:
        for fd in fds:
            os.close(fd)
        raise


def _warm() -> None:
    """Run the request path once on a dummy call before any fork, so what it loads or caches on
    first use is there in every worker."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(N_FDS)]
    received: list[int] = []
    try:
        env = b"CNI_COMMAND=VERSION\0PATH=/usr/bin\0"
        a.sendmsg([b"\0".join([PROTO, b"loopback", b"22", env])],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
        req = read_request(b)
        received = req.fds
        skel.invoke(host_local.HANDLERS, req.env, b"", "warm-up")
        lean.loads(lean.dumps({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24"}]}))
        with nl.Netlink() as sock:  # a read-only query: touches the netlink code every plugin uses
            sock.get_link("lo")
    finally:
        for fd in fds + received:
            os.close(fd)
        a.close()
        b.close()


def run_plugin(req: Request) -> int:
    """Become the plugin process: its stdio, cwd, netns, umask and environment, then its main().

    The netns matters: "the host" of a plugin is the netns it was called in (a node that is
    itself a netns, a runtime in one), not the server's."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # plugins wait for their own children
    for target, fd in enumerate(req.fds[:3]):
        os.dup2(fd, target)
    os.fchdir(req.fds[3])
    lean.setns(req.fds[4])
    for fd in req.fds:
        os.close(fd)
    os.umask(req.umask)
    os.environ.clear()
    os.environ.update(req.env)
    sys.argv = [req.plugin]
    try:
        rc = MAINS[req.plugin]()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


class _Stopped(Exception):
    """Raised from the signal handler: PEP 475 would otherwise resume select() after it."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _worker(conn: socket.socket) -> None:
    """Forked for one accepted call: serves it, then exits."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        gc.disable()  # lives for one call; collection would only copy shared pages
        try:
            req = read_request(conn)
        except (OSError, ValueError) as exc:
            # closed with the request unread: the launcher sees a reset and runs the plugin itself
            print(f"berth cni server: {exc}", file=sys.stderr)
            return
        rc = run_plugin(req)
        conn.sendall(b"%d" % rc)
    finally:
        os._exit(0)


def bind(path: str) -> socket.socket:
    """Root-only path socket; a stale one (its server gone) is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def serve(path: str, idle: float = 0) -> int:
    """Serve until SIGTERM/SIGINT or `idle` seconds without a call (0: forever)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server owns this socket
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())  # who to stop: tests, operators
    listener = bind(path)
    ino, me = os.stat(path).st_ino, os.getpid()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    with contextlib.suppress(Exception):  # only an optimisation: never refuse to serve over it
        _warm()
    gc.freeze()  # keep the collector off the pages the workers share with us
    last_call = time.monotonic()
    try:
        while True:
            wait = max(0.0, last_call + idle - time.monotonic()) if idle else None
            ready, _w, _x = select.select([listener], [], [], wait)
            if not ready:
                if idle and time.monotonic() - last_call >= idle:
                    break
                continue
            try:
                conn, _addr = listener.accept()
            except ConnectionAbortedError:
                continue
            last_call = time.monotonic()
            try:
                pid = os.fork()
            except OSError as exc:  # conn closed unread: the launcher runs the plugin itself
                print(f"berth cni server: fork: {exc}", file=sys.stderr)
                pid = -1
            if pid == 0:  # the worker: the server's fds must not outlive the server
                listener.close()
                os.close(lock)
                _worker(conn)
            conn.close()
    except _Stopped:
        pass
    finally:
        if os.getpid() != me:  # a worker hit by the signal before it could reset it
            os._exit(0)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)
        listener.close()  # workers already serving a call finish it
        os.close(lock)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cni_plugins.server")
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument("--idle", type=float, default=0, help="exit after this many idle seconds")
    opts = parser.parse_args()
    return serve(opts.socket, opts.idle)


if __name__ == "__main__":
    sys.exit(main())
