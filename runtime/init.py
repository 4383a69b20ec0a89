"""Container init: fork a child that builds the sandbox, parks until start(), then execs.

Call spawn()/spawn_exec() only from a single-threaded process (the monitor): spawn forks, and
both switch the caller's pid namespace for children. spawn_exec does not fork: it posix_spawns
the C helper runtime/joinexec.c (see there for why, and runtime/joinexec.py for the plan).

The pid namespace is switched in the *caller* around the fork or spawn (unshare, or setns to
the target ns, then setns back), so the child is itself the container's pid 1 (or a process in
its pid ns) and a direct child of the caller, which can waitpid() it and read its exit status.

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
the working directory is set after pivot_root from inside the new root. joinexec.c takes the same
measures for execs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime import cgroups, hooks, initchild, joinexec, libc, namespaces, rootfs, seccomp, sysctl
from runtime import spec as oci
from runtime.initchild import InitError
from runtime.namespaces import NsPlan
from runtime.spec import UserNotFound, resolve_user

__all__ = ["InitError", "Spawned", "UserNotFound", "forget", "resolve_user", "run", "spawn",
           "spawn_exec"]

_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}
# as ints: valid_signals() builds an enum member per signal, ~0.3 ms a call
_CATCHABLE = tuple(int(sig) for sig in signal.valid_signals() if sig not in _UNCATCHABLE)


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




def spawn(spec: dict[str, Any], rootfs_path: str, *, stdio: tuple[int, int, int],
          cgroup_path: str | None = None, overlay: rootfs.Overlay | None = None,
          hook_state: hooks.State | None = None) -> Spawned:
    """Create the container (OCI create): returns once pid 1 is set up and parked before exec.

    spec.hooks run as `runtime/hooks.py` says; `hook_state` is what they read (by default an
    unnamed container whose bundle is the rootfs's parent, as in an OCI bundle).

    Namespaces with a path in spec.linux.namespaces are joined, the others created. With a new
    user namespace, clone3 creates it together with the pid namespace (so the pid ns is owned by
    it and /proc can be mounted) and we write the id maps, cgroup and oom_score_adj from here.
    """
    _single_threaded()
    process = oci.parse_process(spec["process"])
    try:
        parsed_hooks = hooks.parse(spec)
    except ValueError as e:
        raise InitError(str(e)) from None
    state = hook_state or hooks.State("", os.path.dirname(os.path.abspath(rootfs_path)))
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
    job = initchild.Job(spec, rootfs_path, process, plan, stdio, cg, cgroup_path, sysctls,
                        overlay, bpf, userns, trees, _handled_signals(), parsed_hooks)
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
            initchild.child_guard(status_w, lambda: initchild.init_child(job, start_r, status_w))
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
        at_hooks = (lambda: _create_hooks(parsed_hooks, state, pid, start_w)) \
            if parsed_hooks.keys() & initchild.SYNC_HOOKS else None
        status = _read_all_until_ready(status_r, at_hooks)
    except BaseException as e:
        os.kill(pid, signal.SIGKILL)
        status = initchild.error_text(e)
    finally:
        for fd in trees:
            os.close(fd)
    if status != "ready":
        os.close(start_w)
        os.close(status_r)
        _reap_failed(pid)
        raise InitError(status or "container init died before it was ready")
    _seccomp_of[pid] = bpf
    return Spawned(pid, libc.pidfd_open(pid), start_w, status_r)


def _create_hooks(parsed: dict[str, list[hooks.Hook]], state: hooks.State, pid: int,
                  start_w: int) -> None:
    """prestart and createRuntime here, in our namespaces; then the child runs createContainer
    with the same state, which it cannot build itself (it sees itself as pid 1)."""
    doc = state.encode("creating", pid)
    for kind in ("prestart", "createRuntime"):
        hooks.run_all(kind, parsed, doc, state.bundle)
    os.write(start_w, b"C" + struct.pack("!I", len(doc)) + doc)


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


def _setup_userns_child(spec: dict[str, Any], pid: int, job: initchild.Job, start_w: int) -> None:
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


def _read_all_until_ready(fd: int, on_hooks: Callable[[], None] | None = None) -> str:
    """'ready' once the child parked; otherwise its error message ('' if it died silently).

    AT_HOOKS first: the child stopped before pivot_root for the create-time hooks."""
    first = os.read(fd, 1)
    if first == initchild.AT_HOOKS and on_hooks is not None:
        on_hooks()
        first = os.read(fd, 1)
    if first == initchild.READY:
        return "ready"
    return (first + _read_all(fd).encode()).decode(errors="replace")


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
    files = _cgroup_driver().join_files(cgroup_path) if cgroup_path else []
    plan = namespaces.plan_from_pid(container_pid)
    try:
        args = joinexec.argv(proc, plan, files, bpf)
    except (ValueError, oci.ProcessError) as e:
        plan.close()
        raise InitError(initchild.error_text(e)) from None
    handled = _handled_signals()
    status_r, status_w = os.pipe()
    try:
        with namespaces.pid_ns_for_fork(plan):
            pid = joinexec.spawn(args, plan, stdio, bpf, status_w, handled)
    except BaseException:
        os.close(status_r)
        raise
    finally:
        plan.close()
        os.close(status_w)
    msg = _read_all(status_r)
    os.close(status_r)
    if msg:
        _reap_failed(pid)
        raise InitError(msg)
    return pid
