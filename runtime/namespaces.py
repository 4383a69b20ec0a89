"""Namespace plumbing shared by container create and exec: which to join, which to unshare."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from runtime import libc
from runtime import spec as oci

_self_pid_ns: int | None = None


@dataclass
class NsPlan:
    """Namespaces to join (type -> open fd) and the flags of the ones to create."""

    join: dict[str, int] = field(default_factory=dict)
    new_flags: int = 0
    new_types: set[str] = field(default_factory=set)

    def close(self) -> None:
        for fd in self.join.values():
            os.close(fd)
        self.join.clear()


def plan_from_spec(spec: dict[str, object]) -> NsPlan:
    """Open every linux.namespaces[].path now, so a bad path fails in the caller, not the child."""
    plan = NsPlan()
    try:
        for ns in oci.namespaces(spec):  # type: ignore[arg-type]
            if ns.path:
                try:
                    plan.join[ns.type] = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise OSError(e.errno, f"open {ns.type} namespace {ns.path}: "
                                  f"{os.strerror(e.errno or 0)}") from None
            else:
                plan.new_types.add(ns.type)
                plan.new_flags |= oci.NS_FLAGS[ns.type]
    except BaseException:
        plan.close()
        raise
    if "time" in plan.new_types:
        plan.close()
        raise oci.ProcessError("a new time namespace is not supported")
    return plan


def plan_from_pid(pid: int) -> NsPlan:
    """Namespaces of a running container that differ from ours (joining our own user ns fails)."""
    plan = NsPlan()
    try:
        for typ, name in oci.NS_PROC_NAME.items():
            theirs = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
                plan.join[typ] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if typ in ("mount", "pid"):
                    raise ProcessLookupError(f"container process {pid} is gone") from None
    except BaseException:
        plan.close()
        raise
    return plan


def join_all(plan: NsPlan, *, skip: tuple[str, ...] = ("pid",)) -> None:
    """setns in NS_JOIN_ORDER: mount late since it swaps our root, user last (see there)."""
    for typ in oci.NS_JOIN_ORDER:
        fd = plan.join.get(typ)
        if fd is None or typ in skip:
            continue
        try:
            libc.setns(fd, oci.NS_FLAGS[typ])
        except OSError as e:
            raise OSError(e.errno, f"join {typ} namespace: {os.strerror(e.errno or 0)}") from None


def _own_pid_ns() -> int:
    global _self_pid_ns
    if _self_pid_ns is None:
        _self_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    return _self_pid_ns


@contextlib.contextmanager
def pid_ns_for_fork(plan: NsPlan) -> Iterator[None]:
    """Point our pid_for_children at the container's pid ns for one fork, then point it back.

    This keeps the forked child a direct child of the caller, so the caller can waitpid() the
    container's pid 1 and see its real exit status. Only the parent leaves this block: the child
    must never run the restore (it would move the container's future children to the host ns).
    """
    fd = plan.join.get("pid")
    new = "pid" in plan.new_types
    if fd is None and not new:
        yield
        return
    own = _own_pid_ns()
    if fd is not None:
        libc.setns(fd, libc.CLONE_NEWPID)
    else:
        libc.unshare(libc.CLONE_NEWPID)
    pid = os.getpid()
    try:
        yield
    finally:
        if os.getpid() == pid:
            libc.setns(own, libc.CLONE_NEWPID)


# Joined by the caller around a fork that creates a user namespace: from inside it the child
# would lack CAP_SYS_ADMIN over namespaces the host's user namespace owns, so setns would fail.
INHERITED_BY_USERNS = ("ipc", "uts", "network")


@contextlib.contextmanager
def joined_for_userns_fork(plan: NsPlan) -> Iterator[None]:
    """Move the (single-threaded) caller into the pod's ipc/uts/net for one fork, then back.

    The child, cloned with CLONE_NEWUSER, keeps these namespaces (it holds no privilege over
    them, as in a pod whose namespaces the host owns). Only the parent runs the restore.
    """
    kinds = [k for k in INHERITED_BY_USERNS if k in plan.join]
    own = {k: os.open(f"/proc/self/ns/{oci.NS_PROC_NAME[k]}", os.O_RDONLY | os.O_CLOEXEC)
           for k in kinds}
    pid = os.getpid()
    try:
        for k in kinds:
            libc.setns(plan.join[k], oci.NS_FLAGS[k])
        yield
    finally:
        if os.getpid() == pid:
            for k in kinds:
                libc.setns(own[k], oci.NS_FLAGS[k])
            for fd in own.values():
                os.close(fd)


def write_id_maps(pid: int, uid_maps: list[oci.IdMapping], gid_maps: list[oci.IdMapping]) -> None:
    """Write a user namespace's maps from the parent (root needs no newuidmap)."""
    for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
