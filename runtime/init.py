"""Container init: fork a child that builds the sandbox, parks until start(), then execs.

Call spawn()/spawn_exec() only from a single-threaded process (the monitor): they fork.

The pid namespace is switched in the *caller* around the fork (unshare, or setns to the target
ns, then setns back), so the forked child is itself the container's pid 1 and a direct child of
the caller, which can waitpid() it and read its real exit status.

CVE-2019-5736 (overwriting the runtime through /proc/<pid>/exe): until its execve the child runs
our Python interpreter, so /proc/<child>/exe points at the host's python binary. The child makes
itself non-dumpable (PR_SET_DUMPABLE=0) first thing, before it joins any container namespace;
the kernel then refuses /proc/<pid>/exe and /proc/<pid>/fd/* (ptrace access checks) to any
process lacking CAP_SYS_PTRACE in the host user namespace. A second barrier holds while the
child keeps more capabilities than the container (commoncap refuses access to a task whose
permitted set is not a subset of the caller's); dumpable=0 is what still covers the last steps,
after the caps drop and before execve. execve resets dumpability only once the container's
binary has replaced the interpreter, and nothing ever re-execs python inside the container, so
no container process can open our interpreter and its own /proc/self/exe is a container file.

CVE-2024-21626: every fd above 2 is marked close-on-exec (close_range) just before execve, and
the working directory is set after pivot_root from inside the new root.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import os
import signal
import stat
import termios
from dataclasses import dataclass, field
from typing import Any

from runtime import caps, cgroups, libc, namespaces, rootfs, seccomp, sysctl
from runtime import spec as oci
from runtime.namespaces import NsPlan
from runtime.spec import UserNotFound, resolve_user

__all__ = ["InitError", "Spawned", "UserNotFound", "forget", "resolve_user", "run", "spawn",
           "spawn_exec"]

_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}
# as ints: valid_signals() builds an enum member per signal, ~0.3 ms a call
_CATCHABLE = tuple(int(sig) for sig in signal.valid_signals() if sig not in _UNCATCHABLE)


class InitError(oci.ProcessError):
    """The container could not be created/started; the message comes from the child."""


@dataclass
class Spawned:
    """A created container: pid 1 parked before exec until start()."""

    pid: int
    pidfd: int
    _start_w: int
    _status_r: int
    error: str | None = None
    _closed: bool = field(default=False, repr=False)

    def start(self) -> None:
        """Release the init to exec; raise InitError with the child's message if exec failed."""
        try:
            os.write(self._start_w, b"S")
        except BrokenPipeError:
            self.close()
            raise InitError("container init exited before start") from None
        msg = _read_all(self._status_r)
        self.close()
        if msg:
            self.error = msg
            raise InitError(msg)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal through the pidfd, never a possibly recycled pid."""
        libc.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Close the sync pipes (the pidfd stays: close it with close_pidfd when reaped)."""
        if not self._closed:
            self._closed = True
            os.close(self._start_w)
            os.close(self._status_r)

    def close_pidfd(self) -> None:
        """Release the pidfd once the container has been reaped."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __del__(self) -> None:
        """A dropped handle must not leak its fds in a long-lived monitor."""
        with contextlib.suppress(OSError):
            self.close()
            self.close_pidfd()


_seccomp_of: dict[int, bytes | None] = {}  # container pid -> its filter, re-applied by exec
_status_fd = [-1]  # child side: where _child_guard reports, updated when fds are renumbered


def _read_all(fd: int) -> str:
    out = bytearray()
    while chunk := os.read(fd, 65536):
        out += chunk
    return out.decode(errors="replace")


def _compile_seccomp(spec: dict[str, Any]) -> bytes | None:
    profile = oci.linux(spec).get("seccomp")
    if not profile:
        return None
    return seccomp.compile_profile(profile)


@functools.cache
def _cgroup_driver() -> Any:
    """One per process: the cgroup mounts do not change under a running monitor, and telling
    v1 from v2 reads mountinfo and stats every controller (~0.7 ms of each exec)."""
    return cgroups.driver()


def _own_oom_score_adj() -> int:
    with open("/proc/self/oom_score_adj") as f:
        return int(f.read())


def _handled_signals() -> list[int]:
    """Signals with a handler or SIG_IGN here, to reset in the child (SIG_IGN survives exec).

    Read before the fork: in the child every page Python touches is a copy-on-write fault,
    and walking all 64 signals there cost ~0.5 ms of each exec."""
    return [sig for sig in _CATCHABLE if signal.getsignal(sig) != signal.SIG_DFL]


def _single_threaded() -> None:
    """fork() from a threaded process can deadlock the child on a lock another thread held."""
    with open("/proc/self/stat", "rb") as f:
        threads = int(f.read().rsplit(b")", 1)[1].split()[17])
    if threads != 1:
        raise InitError(f"spawn needs a single-threaded caller, this one has {threads} threads")


def _reap_failed(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@dataclass
class _Job:
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


def spawn(spec: dict[str, Any], rootfs_path: str, *, stdio: tuple[int, int, int],
          cgroup_path: str | None = None, overlay: rootfs.Overlay | None = None) -> Spawned:
    """Create the container (OCI create): returns once pid 1 is set up and parked before exec.

    Namespaces with a path in spec.linux.namespaces are joined, the others created. With a new
    user namespace, clone3 creates it together with the pid namespace (so the pid ns is owned by
    it and /proc can be mounted) and we write the id maps, cgroup and oom_score_adj from here.
    """
    _single_threaded()
    process = oci.parse_process(spec["process"])
    bpf = _compile_seccomp(spec)
    cg: Any = _cgroup_driver() if cgroup_path else None
    plan = namespaces.plan_from_spec(spec)
    userns = "user" in plan.new_types
    try:
        _check_plan(spec, plan)
        sysctls = dict(oci.linux(spec).get("sysctl") or {})
        if sysctls:
            sysctl.validate(sysctls, host_net=_shared(spec, "network"),
                            host_ipc=_shared(spec, "ipc"), host_uts=_shared(spec, "uts"))
    except BaseException:
        plan.close()
        raise
    try:
        trees = rootfs.bind_trees(spec) if userns else []
    except BaseException:
        plan.close()
        raise
    job = _Job(spec, rootfs_path, process, plan, stdio, cg, cgroup_path, sysctls, overlay, bpf,
               userns, trees, _handled_signals())
    start_r, start_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        if userns:
            with namespaces.joined_for_userns_fork(plan):
                pid = libc.fork_with_flags(libc.CLONE_NEWUSER | (
                    libc.CLONE_NEWPID if "pid" in plan.new_types else 0))
        else:
            with namespaces.pid_ns_for_fork(plan):
                pid = os.fork()
        if pid == 0:
            _child_guard(status_w, lambda: _init_child(job, start_r, status_w))
    except BaseException:
        for fd in trees:
            os.close(fd)
        raise
    finally:
        plan.close()
        os.close(start_r)
        os.close(status_w)
    try:
        if userns:
            _setup_userns_child(spec, pid, job, start_w)
        status = _read_all_until_ready(status_r)
    except BaseException as e:
        os.kill(pid, signal.SIGKILL)
        status = error_text(e)
    finally:
        for fd in trees:
            os.close(fd)
    if status != "R":
        os.close(start_w)
        os.close(status_r)
        _reap_failed(pid)
        raise InitError(status or "container init died before it was ready")
    _seccomp_of[pid] = bpf
    return Spawned(pid, libc.pidfd_open(pid), start_w, status_r)


def _check_plan(spec: dict[str, Any], plan: NsPlan) -> None:
    if "mount" not in plan.new_types:
        raise InitError("the container needs a new mount namespace")
    has_uts = "uts" in plan.new_types or "uts" in plan.join
    if (spec.get("hostname") or spec.get("domainname")) and not has_uts:
        raise InitError("a hostname needs a private UTS namespace")
    if "user" in plan.new_types:
        if not oci.id_mappings(spec, "uidMappings") or not oci.id_mappings(spec, "gidMappings"):
            raise InitError("a new user namespace needs uidMappings and gidMappings")
        if "pid" in plan.join:
            raise InitError("a new user namespace cannot join an existing pid namespace")


def _setup_userns_child(spec: dict[str, Any], pid: int, job: _Job, start_w: int) -> None:
    """Host-side steps the child cannot do from inside its user namespace, then release it."""
    namespaces.write_id_maps(pid, oci.id_mappings(spec, "uidMappings"),
                             oci.id_mappings(spec, "gidMappings"))
    rootfs.idmap_trees(spec, job.trees, f"/proc/{pid}/ns/user")
    if job.cg is not None:
        job.cg.add_pid(job.cgroup_path, pid)
    if job.proc.oom_score_adj is not None:
        oci.write_oom_score_adj(f"/proc/{pid}/oom_score_adj", job.proc.oom_score_adj)
    os.write(start_w, b"M")


def run(spec: dict[str, Any], rootfs_path: str, *, stdio: tuple[int, int, int],
        cgroup_path: str | None = None) -> int:
    """create + start + wait (like `runc run`); the exit code, -N for a signal."""
    sp = spawn(spec, rootfs_path, stdio=stdio, cgroup_path=cgroup_path)
    try:
        sp.start()
    finally:
        _, status = os.waitpid(sp.pid, 0)
        sp.close_pidfd()
        forget(sp.pid)
    return os.waitstatus_to_exitcode(status)


def forget(pid: int) -> None:
    """Drop what exec remembered about a container once it is gone."""
    _seccomp_of.pop(pid, None)


def _shared(spec: dict[str, Any], typ: str) -> bool:
    return all(n.type != typ or n.path for n in oci.namespaces(spec))


def _read_all_until_ready(fd: int) -> str:
    """'R' once the child parked; otherwise its error message (or '' if it died silently)."""
    first = os.read(fd, 1)
    return "R" if first == b"R" else (first + _read_all(fd).encode()).decode(errors="replace")


def spawn_exec(container_pid: int, process: dict[str, Any], *, stdio: tuple[int, int, int],
               cgroup_path: str | None = None,
               seccomp_profile: dict[str, Any] | None = None) -> int:
    """Start a process inside a running container; returns its pid once it has exec'd.

    The container's seccomp filter (remembered from spawn) is applied unless a profile is given.
    """
    _single_threaded()
    proc = oci.parse_process(process)
    if proc.oom_score_adj is None:  # like the container's other processes, not like us
        with contextlib.suppress(OSError, ValueError), \
                open(f"/proc/{container_pid}/oom_score_adj") as f:
            proc.oom_score_adj = int(f.read())
    bpf = _seccomp_of.get(container_pid)
    if seccomp_profile is not None:
        bpf = _compile_seccomp({"linux": {"seccomp": seccomp_profile}})
    if proc.oom_score_adj is not None and proc.oom_score_adj <= _own_oom_score_adj():
        proc.oom_score_adj = None  # the child inherits ours, and a write never lowers it
    cg: Any = _cgroup_driver() if cgroup_path else None
    plan = namespaces.plan_from_pid(container_pid)
    handled = _handled_signals()
    status_r, status_w = os.pipe()
    try:
        with namespaces.pid_ns_for_fork(plan):
            pid = os.fork()
            if pid == 0:
                _child_guard(status_w, lambda: _exec_child(proc, plan, stdio, cg, cgroup_path,
                                                           bpf, status_w, handled))
    finally:
        plan.close()
        os.close(status_w)
    msg = _read_all(status_r)
    os.close(status_r)
    if msg:
        _reap_failed(pid)
        raise InitError(msg)
    return pid


def _child_guard(status_w: int, body: Any) -> None:
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


def _init_child(job: _Job, start_r: int, status_w: int) -> None:
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
    rootfs.prepare(job.spec, rootfs_path, overlay=job.overlay, trees=trees,
                   console_fd=0 if proc.terminal else None)
    oci.apply_limits(proc, oom=not job.userns)
    os.write(status_w, b"R")
    if os.read(start_r, 1) != b"S":
        os._exit(1)  # the monitor went away without starting us
    _finalize(proc, job.bpf, status_w)


def _exec_child(proc: oci.Process, plan: NsPlan, stdio: tuple[int, int, int], cg: Any,
                cgroup_path: str | None, bpf: bytes | None, status_w: int,
                handled: list[int]) -> None:
    """A process joining a running container: cgroup first, then its namespaces, then exec."""
    fds = _early_child(stdio, [status_w] + list(plan.join.values()), proc.terminal, handled)
    status_w = _status_fd[0] = fds[0]
    plan.join = dict(zip(plan.join.keys(), fds[1:], strict=True))
    if cg is not None:
        cg.join(cgroup_path)
    if proc.oom_score_adj is not None:  # before a user ns join hides our /proc/self from us
        oci.write_oom_score_adj("/proc/self/oom_score_adj", proc.oom_score_adj)
    namespaces.join_all(plan)
    plan.close()
    os.chdir("/")  # setns(mnt) left cwd undefined; "/" is now the container's root
    oci.apply_limits(proc, oom=False)
    _finalize(proc, bpf, status_w)


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
