"""Plain fork/chroot/exec stand-in for runtime.init's spawn API, used until that lands."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import termios
from dataclasses import dataclass
from typing import Any

from runtime.monitor import cg

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Spawned:
    """A process parked before exec until start()."""

    pid: int
    go: int
    err: int

    def start(self) -> None:
        """Release the process and report its exec failure, if any."""
        os.write(self.go, b"x")
        os.close(self.go)
        msg = b""
        while chunk := os.read(self.err, 4096):
            msg += chunk
        os.close(self.err)
        if msg:
            raise RuntimeError(msg.decode(errors="replace"))


def _resolve(arg0: str, env: dict[str, str]) -> str:
    if "/" in arg0:
        return arg0
    for d in env.get("PATH", "/bin:/usr/bin").split(":"):
        if os.access(os.path.join(d, arg0), os.X_OK):
            return os.path.join(d, arg0)
    raise FileNotFoundError(f"{arg0}: not found in PATH")


def _exec_in(root: str, process: dict[str, Any], stdio: tuple[int, int, int]) -> None:
    """Child side: fresh session, die with the monitor, stdio, chroot, exec."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for i, fd in enumerate(stdio):
        os.dup2(fd, i)
    if process.get("terminal"):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    env = dict(e.split("=", 1) for e in process.get("env", []))
    os.chroot(root)
    os.chdir(process.get("cwd", "/"))
    path = _resolve(process["args"][0], env)
    os.execve(path, process["args"], env)


def spawn(spec: dict[str, Any], rootfs: str, *, stdio: tuple[int, int, int],
          cgroup_path: str | None) -> Spawned:
    """Fork a child that waits for start() before exec."""
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            os.close(err_r)
            if not os.read(go_r, 1):
                os._exit(127)
            _exec_in(rootfs, spec["process"], stdio)
        except BaseException as e:
            os.write(err_w, f"{type(e).__name__}: {e}".encode())
        os._exit(127)
    os.close(go_r)
    os.close(err_w)
    if cgroup_path:
        cg.add_pid(cgroup_path, pid)
    return Spawned(pid, go_w, err_r)


def spawn_exec(container_pid: int, process: dict[str, Any], *, stdio: tuple[int, int, int],
               cgroup_path: str | None) -> int:
    """Fork and exec inside the container's root (no namespaces in the stand-in)."""
    pid = os.fork()
    if pid == 0:
        try:
            if cgroup_path:
                cg.add_pid(cgroup_path, os.getpid())
            _exec_in(f"/proc/{container_pid}/root", process, stdio)
        except BaseException as e:
            os.write(2, f"exec failed: {e}\n".encode())
        os._exit(127)
    return pid
