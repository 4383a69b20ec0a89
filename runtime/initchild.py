"""What runs in the forked container init of `runtime.init`: from the fork to execve.

Everything here runs in a copy of the single-threaded monitor, as root, before the container's
binary replaces the interpreter: hide our exe, move fds, join the cgroup and namespaces, build
the root, drop privileges in the order the kernel allows, load seccomp, exec. Execs into a
running container take the same steps (less the root) in C: runtime/joinexec.c. A
failure is reported to the parent as one line of text on the status pipe (`child_guard`), and
the child exits 127. `runtime/init.py` (the parent side) says why the pid namespace is switched
around the fork and which CVEs the order of these steps closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import signal
import stat
import struct
import termios
from dataclasses import dataclass
from typing import Any

from runtime import caps, hooks, libc, namespaces, rootfs, seccomp, sysctl
from runtime import spec as oci
from runtime.namespaces import NsPlan

_status_fd = [-1]  # where child_guard reports, updated when fds are renumbered


class InitError(oci.ProcessError):
    """The container could not be created/started; the message comes from the child."""


@dataclass
class Job:
    """Everything the init child needs, computed in the parent before the fork."""

    spec: dict[str, Any]
    rootfs_path: str
    proc: oci.Process
    plan: NsPlan
    stdio: tuple[int, int, int]
    cg: Any
    cgroup_path: str | None
    sysctls: dict[str, str]
    overlay: rootfs.Overlay | None
    bpf: bytes | None
    userns: bool
    trees: list[int]  # user ns: detached clones of the bind sources, in oci.mounts order
    handled: list[int]  # to reset to SIG_DFL in the child
    hooks: dict[str, list[hooks.Hook]]  # spec.hooks, parsed


# kinds that need the child to stop before pivot_root and wait for the monitor
SYNC_HOOKS = {"prestart", "createRuntime", "createContainer", "startContainer"}
# what the child writes on the status pipe besides an error's text: control bytes, which no
# message starts with ("Read-only file system: ..." once read as a ready "R")
READY = b"\x06"
AT_HOOKS = b"\x05"


def child_guard(status_w: int, body: Any) -> None:
    """Run the child body; any failure goes to the parent as text and the child exits 127."""
    _status_fd[0] = status_w
    try:
        body()
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        msg = error_text(e)
        with contextlib.suppress(OSError):
            os.write(_status_fd[0], msg.encode(errors="replace") or b"init failed")
    finally:
        os._exit(127)


def error_text(e: BaseException) -> str:
    """An exception as one clear line: 'mount /proc: Operation not permitted', no '[Errno 1]'."""
    if isinstance(e, OSError) and e.strerror:
        name = e.filename if isinstance(e.filename, str) else ""
        return e.strerror if not name or name in e.strerror else f"{e.strerror}: {name}"
    return str(e) if isinstance(e, oci.ProcessError) else f"{type(e).__name__}: {e}"


def _early_child(stdio: tuple[int, int, int], keep: list[int], terminal: bool,
                 handled: list[int]) -> list[int]:
    """Common first steps: hide our exe, reset signals, new session, stdio on 0-2, drop fds."""
    gc.disable()  # stray finalizers of the parent's objects must not close fds we reuse
    libc.set_dumpable(False)
    libc.set_pdeathsig(signal.SIGKILL)
    signal.set_wakeup_fd(-1)
    for sig in handled:  # SIG_IGN survives exec; our handlers must not run here
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in stdio]
    kept = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in keep]
    for i, fd in enumerate(high):
        os.dup2(fd, i, inheritable=True)
    base = 3
    moved = []
    for fd in kept:
        os.dup2(fd, base, inheritable=False)
        moved.append(base)
        base += 1
    libc.close_range(base)
    if terminal:
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError as e:
            raise InitError(f"terminal: stdin cannot be our tty: {e.strerror}") from None
    return moved


def init_child(job: Job, start_r: int, status_w: int) -> None:
    """Pid 1 of the new container: cgroup, namespaces, mounts, limits; park; then exec."""
    plan, proc = job.plan, job.proc
    keep = [start_r, status_w] + list(plan.join.values()) + job.trees
    fds = _early_child(job.stdio, keep, proc.terminal, job.handled)
    start_r, status_w = fds[0], fds[1]
    _status_fd[0] = status_w
    plan.join = dict(zip(plan.join.keys(), fds[2:2 + len(plan.join)], strict=True))
    trees = fds[2 + len(plan.join):]
    rootfs_path = job.rootfs_path
    if job.userns:
        if os.read(start_r, 1) != b"M":
            os._exit(1)
        # Still host uid 0 (the owner of the state dirs, which may be 0700): step next to the
        # rootfs now, as root inside would be refused the walk. unshare(CLONE_NEWNS) carries
        # the cwd into the new mount namespace.
        os.chdir(os.path.dirname(os.path.abspath(rootfs_path)))
        rootfs_path = os.path.basename(rootfs_path)
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError as e:
            raise InitError(f"user namespace: root is not mapped: {e.strerror}") from None
        libc.set_pdeathsig(signal.SIGKILL)
    elif job.cg is not None:
        job.cg.join(job.cgroup_path)
    namespaces.join_all(plan, skip=("pid", *namespaces.INHERITED_BY_USERNS) if job.userns
                        else ("pid",))
    plan.close()
    libc.unshare(plan.new_flags & ~(libc.CLONE_NEWPID | libc.CLONE_NEWUSER))
    if job.sysctls:
        sysctl.apply(job.sysctls)
    if job.spec.get("hostname"):
        libc.sethostname(job.spec["hostname"])
    if job.spec.get("domainname"):
        libc.setdomainname(job.spec["domainname"])
    state = [b""]

    def create_hooks() -> None:
        """The monitor runs prestart and createRuntime and sends the state; then ours."""
        os.write(status_w, AT_HOOKS)
        state[0] = _read_state(start_r)
        hooks.run_all("createContainer", job.hooks, state[0],
                      cwd=json.loads(state[0])["bundle"])

    rootfs.prepare(job.spec, rootfs_path, overlay=job.overlay, trees=trees,
                   console_fd=0 if proc.terminal else None,
                   before_pivot=create_hooks if job.hooks.keys() & SYNC_HOOKS else None)
    oci.apply_limits(proc, oom=not job.userns)
    os.write(status_w, READY)
    if os.read(start_r, 1) != b"S":
        os._exit(1)  # the monitor went away without starting us
    if "startContainer" in job.hooks:  # in the container's root now: its paths, "/" as cwd
        doc = json.loads(state[0])
        doc["status"] = "created"
        hooks.run_all("startContainer", job.hooks, json.dumps(doc).encode(), cwd="/")
    _finalize(proc, job.bpf, status_w)


def _read_state(start_r: int) -> bytes:
    """b"C", a 4-byte length, the state JSON: the monitor's go-ahead after its hooks."""
    head = _read_exactly(start_r, 5)
    if head[:1] != b"C":
        os._exit(1)  # the monitor gave up on us (a hook failed, or it went away)
    return _read_exactly(start_r, struct.unpack("!I", head[1:])[0])


def _read_exactly(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            os._exit(1)
        out += chunk
    return out


def _finalize(proc: oci.Process, bpf: bytes | None, status_w: int) -> None:
    """Drop privileges in the order the kernel allows, install seccomp last, exec."""
    if proc.no_new_privileges:
        libc.set_no_new_privs()
    elif bpf is not None:
        _load_seccomp(bpf)  # without no_new_privs the filter needs CAP_SYS_ADMIN: load it now
    c = proc.capabilities or oci.Capabilities()
    caps.drop_bounding(set(c.bounding))
    caps.set_keepcaps(True)
    u = proc.user
    env = dict(e.partition("=")[::2] for e in proc.env)
    if not env.get("HOME"):  # runc's rule, read while still root (passwd may be 0600)
        env["HOME"] = _home(u.uid)
    try:
        os.setgroups(u.additional_gids)
        os.setgid(u.gid)
        os.setuid(u.uid)
    except OSError as e:
        raise InitError(f"set user {u.uid}:{u.gid}: {os.strerror(e.errno or 0)}") from None
    caps.set_keepcaps(False)
    caps.set_caps(set(c.effective), set(c.permitted), set(c.inheritable))
    caps.set_ambient(set(c.ambient))
    libc.set_pdeathsig(signal.SIGKILL)  # a credential change cleared it
    try:
        os.chdir(proc.cwd)
        os.getcwd()  # ENOENT when the cwd is not below our root (a leaked host fd): refuse it
    except OSError as e:
        raise InitError(f"chdir {proc.cwd}: {os.strerror(e.errno or 0)}") from None
    path = oci.lookup_executable(proc.args[0], env.get("PATH", oci.DEFAULT_PATH))
    libc.close_range(3, flags=libc.CLOSE_RANGE_CLOEXEC)
    if proc.no_new_privileges and bpf is not None:
        _load_seccomp(bpf)
    try:
        os.execve(path, proc.args, env)
    except OSError as e:
        raise InitError(f"exec: {path}: {os.strerror(e.errno or 0).lower()}") from None


def _home(uid: int) -> str:
    """The uid's home in the container's own /etc/passwd (our root is the container's by now),
    "/" without one, as runc sets HOME when the process env has none. Non-blocking and
    regular files only: the image owns that path and could make it a FIFO."""
    try:
        fd = os.open("/etc/passwd", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return "/"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "/"
        text = os.read(fd, 1 << 20).decode("utf-8", "replace")
    finally:
        os.close(fd)
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 6 and f[2] == str(uid) and f[5]:
            return f[5]
    return "/"


def _load_seccomp(bpf: bytes) -> None:
    try:
        seccomp.load(bpf)
    except OSError as e:
        raise InitError(f"seccomp: {os.strerror(e.errno or 0)}") from None
