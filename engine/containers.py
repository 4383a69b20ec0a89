"""Container lifecycle: a rootfs and an OCI spec become a monitor process; stop, kill, remove.

Front ends build the spec (CRI's ContainerConfig, Docker's create body) and reserve the record;
everything from the rootfs mount down is the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import failpoints
from engine.context import Context
from engine.errors import (
    EngineError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from engine.rollback import Rollback
from engine.store import ContainerRecord
from runtime import cgroups, idmap
from runtime import containers as monitor
from runtime.bundle import Bundle
from runtime.cgroups.model import CgroupStats
from runtime.idmap import Mapping
from runtime.images.records import Image
from runtime.stopping import graceful_stop

SpecBuilder = Callable[[Path], dict[str, Any]]  # rootfs → OCI spec (users resolve in the rootfs)
Prepare = Callable[[Path], Awaitable[None]]  # runs on the fresh rootfs before the spec is built
# In `extra` while a create is under way; the finished record replaces `extra` whole, so the
# key is gone from every container that was made (the front end's own keys, e.g. the volumes a
# Docker container reserves, may sit beside it meanwhile).
CREATING = "creating"


@dataclass
class Stdio:
    """How the monitor wires the container's stdio and where its log goes."""

    log_path: str = ""
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False


async def create_container(ctx: Context, rec: ContainerRecord, image: Image,
                           build_spec: SpecBuilder, stdio: Stdio, stop_signal: int,
                           what: str, extra: dict[str, Any] | None = None,
                           rerunnable: bool = False,
                           userns: tuple[list[Mapping], list[Mapping]] | None = None,
                           prepare: Prepare | None = None) -> ContainerRecord:
    """Reserve the record (NameTaken propagates), then rootfs, spec and process; all or nothing.

    The record is stored at once with `rec.extra` (what the front end must show while the
    create runs) and the CREATING mark.

    `extra` is the front end's own part of the record, stored with the engine's; a
    `rerunnable` container keeps its spec so `rerun` can start it again after it exits.
    `userns` (uid and gid maps) mounts the layers idmapped for a user-namespaced container.
    `prepare` reads the rootfs before the process exists (Docker's volume copy-up).
    """
    rec.extra = {**rec.extra, CREATING: True}  # recovery rolls such a record back
    ctx.store.containers.add(rec)
    undo = Rollback()
    undo.push("forget container", lambda: ctx.store.containers.delete(rec.id))
    try:
        rec.extra = await _create(ctx, rec, image, build_spec, stdio, undo, rerunnable, userns,
                                  prepare)
        rec.extra["stop_signal"] = stop_signal
        rec.extra.update(extra or {})
        ctx.store.containers.put(rec)
    except BaseException as exc:
        await undo.run()
        if isinstance(exc, EngineError) or not isinstance(exc, Exception):
            raise
        raise Internal(f"create container {what}: {exc}") from exc
    return rec


async def _create(ctx: Context, rec: ContainerRecord, image: Image, build_spec: SpecBuilder,
                  stdio: Stdio, undo: Rollback, rerunnable: bool,
                  userns: tuple[list[Mapping], list[Mapping]] | None,
                  prepare: Prepare | None) -> dict[str, Any]:
    bundle = Bundle(ctx.bundle_dir(rec.id))
    undo.push("rootfs", bundle.remove)
    idmap_fd = await idmap.userns_fd(*userns) if userns else None
    try:
        bundle.create(ctx.images.rootfs_lowers(image.id), idmap_fd=idmap_fd,
                      root_owner=idmap.root_owner(*userns) if userns else None)
    finally:
        if idmap_fd is not None:
            os.close(idmap_fd)
    failpoints.hit("container.after_rootfs")
    if prepare is not None:
        await prepare(bundle.rootfs)
    spec = build_spec(bundle.rootfs)
    if rerunnable or spec.get("hooks"):  # hooks (CDI's) read bundle/config.json, as runc's do
        save_spec(ctx, rec.id, spec)
    if stdio.log_path:
        Path(stdio.log_path).parent.mkdir(parents=True, exist_ok=True)
    undo.push("monitor", lambda: _forget(ctx, rec.id))
    try:
        ctx.states.apply(await ctx.monitor.create(
            rec.id, spec, str(bundle.rootfs), cgroup_path=spec["linux"]["cgroupsPath"],
            log_path=stdio.log_path, tty=stdio.tty, stdin=stdio.stdin,
            stdin_once=stdio.stdin_once))
    except monitor.MonitorError as exc:
        raise InvalidArgument(str(exc)) from None
    failpoints.hit("container.after_monitor")
    return {"log_path": stdio.log_path, "image_ref": image.id, "process": spec["process"],
            "mounts": [m for m in spec["mounts"] if m["type"] == "bind"]}


async def _forget(ctx: Context, cid: str) -> None:
    with contextlib.suppress(monitor.NotFound):
        await ctx.monitor.stop(cid, timeout=0)
        await ctx.monitor.delete(cid)


async def start(ctx: Context, rec: ContainerRecord) -> None:
    """Let the created process exec its entrypoint."""
    try:
        ctx.states.apply(await ctx.monitor.start(rec.id))
    except monitor.InvalidState as exc:
        raise FailedPrecondition(f"container {rec.id}: {exc}") from None
    except monitor.NotFound:
        raise NotFound(f"container {rec.id} has no process (was it removed?)") from None
    except monitor.MonitorError as exc:
        raise Internal(f"start container {rec.id}: {exc}") from None


async def stop(ctx: Context, rec: ContainerRecord, timeout: float,
               sig: int | None = None) -> None:
    """The stop signal, then SIGKILL after `timeout` seconds; stopping twice is harmless."""
    if sig is None:
        sig = rec.extra.get("stop_signal", signal.SIGTERM)
    try:  # cancelled with the call: the stop is abandoned (runtime.stopping says why)
        ctx.states.apply(await graceful_stop(ctx.monitor, rec.id, timeout, sig))
    except monitor.NotFound:
        pass  # already gone: stopping is idempotent
    except monitor.InvalidState as exc:  # processes outlived SIGKILL past the bound
        raise FailedPrecondition(f"stop container {rec.id}: {exc}") from None


async def kill(ctx: Context, container_id: str) -> None:
    """Used when a pod stops: no grace, like containerd's forced sandbox stop."""
    with contextlib.suppress(monitor.NotFound, monitor.InvalidState):
        ctx.states.apply(
            await ctx.monitor.stop(container_id, timeout=0, sig=signal.SIGKILL))


async def remove(ctx: Context, rec: ContainerRecord) -> None:
    """Force-stop, then drop the process record, the rootfs and the metadata."""
    await kill(ctx, rec.id)
    try:
        await ctx.monitor.delete(rec.id)
    except monitor.NotFound:
        pass
    except monitor.InvalidState as exc:  # still draining past the bound: say what is left
        raise FailedPrecondition(f"remove container {rec.id}: {exc}") from None
    ctx.states.drop(rec.id)
    # unmounts and a walk of every file the container wrote: off the loop
    await asyncio.to_thread(Bundle(ctx.bundle_dir(rec.id)).remove)
    ctx.store.containers.delete(rec.id)


def save_spec(ctx: Context, container_id: str, spec: dict[str, Any]) -> None:
    """Keep the spec beside the rootfs so the process can be created again (restarts)."""
    path = ctx.bundle_dir(container_id) / "config.json"
    path.write_text(json.dumps(spec))


async def rerun(ctx: Context, rec: ContainerRecord) -> None:
    """A new process for a container that has exited, from its saved spec, on the same rootfs
    and log; Docker's start-again and restart. The old process record is dropped first."""
    bundle = Bundle(ctx.bundle_dir(rec.id))
    try:
        spec = json.loads((ctx.bundle_dir(rec.id) / "config.json").read_text())
    except FileNotFoundError:
        raise FailedPrecondition(f"container {rec.id} cannot be run again") from None
    st = ctx.states.states.get(rec.id)
    try:
        await ctx.monitor.delete(rec.id)
    except monitor.NotFound:
        pass
    except monitor.MonitorError as exc:  # e.g. its cgroup is still busy with exiting tasks
        raise Unavailable(f"container {rec.id} cannot be run again yet: {exc}") from None
    ctx.states.drop(rec.id)
    try:
        ctx.states.apply(await ctx.monitor.create(
            rec.id, spec, str(bundle.rootfs), cgroup_path=spec["linux"]["cgroupsPath"],
            log_path=rec.extra.get("log_path", ""), tty=bool(st and st.tty),
            stdin=bool(st and st.stdin), stdin_once=bool(st and st.stdin_once)))
    except monitor.MonitorError as exc:
        raise Internal(f"create container {rec.id} again: {exc}") from None
    await start(ctx, rec)


async def freeze(ctx: Context, rec: ContainerRecord, frozen: bool) -> None:
    """Pause or resume every process of the container through its cgroup's freezer."""
    st = ctx.states.states.get(rec.id)
    if st is None or st.status != "running":
        raise FailedPrecondition(f"container {rec.id} is not running")
    drv = cgroups.driver(ctx.config.runtime.cgroup_root)
    op = drv.freeze if frozen else drv.thaw
    try:
        await asyncio.to_thread(op, st.cgroup_path)
    except OSError as exc:
        raise Internal(f"{'pause' if frozen else 'unpause'} {rec.id}: {exc}") from None


async def usage(ctx: Context, rec: ContainerRecord) -> CgroupStats:
    """The container's cgroup figures, read off the loop (the same reader as CRI stats)."""
    st = ctx.states.states.get(rec.id)
    if st is None or st.status != "running" or not st.cgroup_path:
        raise FailedPrecondition(f"container {rec.id} is not running")
    drv = cgroups.driver(ctx.config.runtime.cgroup_root)
    try:
        return await asyncio.to_thread(drv.stats, st.cgroup_path)
    except OSError as exc:
        raise FailedPrecondition(f"container {rec.id}: no cgroup figures ({exc})") from None
