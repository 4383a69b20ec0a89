"""Container lifecycle RPCs: create (spec + rootfs + monitor), start, stop, remove."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from cri import failpoints, ocispec
from cri.context import Context
from cri.errors import (
    AlreadyExists,
    CriError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    require,
)
from cri.ids import lookup, new_id
from cri.images import check_ref
from cri.podconfig import check_name
from cri.rollback import Rollback
from cri.store import ContainerRecord, NameTaken, PodRecord
from proto import api_pb2 as pb
from runtime import containers as monitor
from runtime.bundle import Bundle
from runtime.images.records import ImageConfig
from runtime.init import InitError, resolve_user


def stop_signal(cfg: pb.ContainerConfig, image: ImageConfig) -> int:
    """CRI's stop_signal wins, then the image's StopSignal, then SIGTERM."""
    if cfg.stop_signal:
        return int(getattr(signal, pb.Signal.Name(cfg.stop_signal).replace("PLUS", "+"),
                           signal.SIGTERM))
    name = image.stop_signal.upper()
    if name.isdigit():
        return int(name)
    if name:
        name = name if name.startswith("SIG") else f"SIG{name}"
        return int(getattr(signal, name, signal.SIGTERM))
    return int(signal.SIGTERM)


def user_of(rootfs: Path, cfg: pb.ContainerConfig,
            image: ImageConfig) -> tuple[int, int, list[int]]:
    """The security context's user wins over the image's; names resolve in the rootfs only."""
    sec = cfg.linux.security_context
    if sec.HasField("run_as_group") and not (sec.HasField("run_as_user") or sec.run_as_username):
        raise InvalidArgument("security_context.run_as_group needs run_as_user or "
                              "run_as_username (CRI: the runtime must refuse it alone)")
    if sec.HasField("run_as_user"):
        if sec.run_as_user.value < 0:
            raise InvalidArgument(f"run_as_user {sec.run_as_user.value} must not be negative")
        who: str = str(sec.run_as_user.value)
    elif sec.run_as_username:
        who = sec.run_as_username
    else:
        who = image.user or "0"
    try:
        uid, gid, groups = resolve_user(str(rootfs), who)
    except (InitError, LookupError) as exc:  # LookupError: no such user/group in the image
        raise InvalidArgument(str(exc)) from None
    if sec.HasField("run_as_group"):
        gid = sec.run_as_group.value
        groups = [gid, *groups[1:]]
    if sec.supplemental_groups_policy == pb.SupplementalGroupsPolicy.Strict:
        groups = [gid]
    extra = [g for g in sec.supplemental_groups if g not in groups]
    return uid, gid, [g for g in groups + extra if g != gid]


class ContainerRPCs:
    """The monitor holds the processes; berthd holds the CRI view and the rootfs mounts."""

    ctx: Context
    if TYPE_CHECKING:  # provided by SandboxRPCs and EventRPCs in the composed servicer
        def pod(self, given: str) -> PodRecord: ...

    def container(self, given: str) -> ContainerRecord:
        return lookup(self.ctx.store.containers, given, "container")

    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateContainerResponse:
        cfg = request.config
        if not cfg.HasField("metadata"):
            raise InvalidArgument("config.metadata is required")
        require(cfg.metadata.name, "config.metadata.name")
        require(cfg.image.image, "config.image.image")
        check_name(cfg.metadata.name, "config.metadata.name")
        log_rel = os.path.normpath(cfg.log_path) if cfg.log_path else ""
        if os.path.isabs(log_rel) or log_rel.split(os.sep)[0] == ".." or "\x00" in log_rel:
            raise InvalidArgument(f"config.log_path '{cfg.log_path[:300]}' must be a relative "
                                  "path inside the pod's log_directory")
        pod = self.pod(request.pod_sandbox_id)
        if pod.state != "SANDBOX_READY":
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
        image = self.ctx.images.get(cfg.image.image)
        if image is None:
            check_ref(cfg.image.image, "config.image.image")
            raise NotFound(f"image {cfg.image.image} not found; pull it first")
        cid = new_id()
        rec = ContainerRecord(id=cid, pod_id=pod.id, name=cfg.metadata.name,
                              attempt=cfg.metadata.attempt, image=cfg.image.image,
                              image_id=image.id, created_ns=time.time_ns(),
                              config=cfg.SerializeToString(), labels=dict(cfg.labels),
                              annotations=dict(cfg.annotations))
        try:
            self.ctx.store.containers.add(rec)
        except NameTaken as exc:
            raise AlreadyExists(f"container name {cfg.metadata.name} (attempt "
                                f"{cfg.metadata.attempt}) in pod {pod.id} is already reserved "
                                f"by {exc}") from None
        undo = Rollback()
        undo.push("forget container", lambda: self.ctx.store.containers.delete(cid))
        try:
            rec.extra = await self._create(rec, pod, cfg, image, undo)
            self.ctx.store.containers.put(rec)
        except BaseException as exc:
            await undo.run()
            if isinstance(exc, CriError) or not isinstance(exc, Exception):
                raise
            raise Internal(f"create container {cfg.metadata.name}: {exc}") from exc
        return pb.CreateContainerResponse(container_id=cid)

    async def _create(self, rec: ContainerRecord, pod: PodRecord, cfg: pb.ContainerConfig,
                      image: Any, undo: Rollback) -> dict[str, Any]:
        bundle = Bundle(self.ctx.bundle_dir(rec.id))
        undo.push("rootfs", bundle.remove)
        bundle.create(self.ctx.images.rootfs_lowers(image.id))
        failpoints.hit("container.after_rootfs")
        image_cfg = image.config
        extra = pod.extra
        pod_ctx = ocispec.PodContext(id=pod.id, ns_paths=extra.get("ns", {}),
                                     files=extra.get("files", {}),
                                     cgroup_parent=extra.get("cgroup_parent") or "berth")
        spec = ocispec.build_spec(container_id=rec.id, cfg=cfg, image=image_cfg, pod=pod_ctx,
                                  user=user_of(bundle.rootfs, cfg, image_cfg), tty=cfg.tty,
                                  cdi_dirs=self.ctx.config.cdi.spec_dirs)
        log_path = ""
        pod_cfg = pb.PodSandboxConfig.FromString(pod.config)
        if pod_cfg.log_directory and cfg.log_path:
            log_path = str(Path(pod_cfg.log_directory) / cfg.log_path)
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        undo.push("monitor", lambda: self._forget(rec.id))
        try:
            self.ctx.states.apply(await self.ctx.monitor.create(
                rec.id, spec, str(bundle.rootfs), cgroup_path=spec["linux"]["cgroupsPath"],
                log_path=log_path, tty=cfg.tty, stdin=cfg.stdin, stdin_once=cfg.stdin_once))
        except monitor.MonitorError as exc:
            raise InvalidArgument(str(exc)) from None
        failpoints.hit("container.after_monitor")
        return {"log_path": log_path, "image_ref": image.id, "process": spec["process"],
                "stop_signal": stop_signal(cfg, image_cfg),
                "mounts": [m for m in spec["mounts"] if m["type"] == "bind"]}

    async def _forget(self, cid: str) -> None:
        with contextlib.suppress(monitor.NotFound):
            await self.ctx.monitor.stop(cid, timeout=0)
            await self.ctx.monitor.delete(cid)

    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: grpc.aio.ServicerContext) -> pb.StartContainerResponse:
        rec = self.container(request.container_id)
        try:
            self.ctx.states.apply(await self.ctx.monitor.start(rec.id))
        except monitor.InvalidState as exc:
            raise FailedPrecondition(f"container {rec.id}: {exc}") from None
        except monitor.NotFound:
            raise NotFound(f"container {rec.id} has no process (was it removed?)") from None
        except monitor.MonitorError as exc:
            raise Internal(f"start container {rec.id}: {exc}") from None
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: grpc.aio.ServicerContext) -> pb.StopContainerResponse:
        rec = self.container(request.container_id)
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} must not be negative")
        with contextlib.suppress(monitor.NotFound):  # already gone: stopping is idempotent
            self.ctx.states.apply(await self.ctx.monitor.stop(
                rec.id, timeout=request.timeout,
                sig=rec.extra.get("stop_signal", signal.SIGTERM)))
        return pb.StopContainerResponse()

    async def kill_container(self, container_id: str) -> None:
        """Used when a pod stops: no grace, like containerd's forced sandbox stop."""
        with contextlib.suppress(monitor.NotFound, monitor.InvalidState):
            self.ctx.states.apply(
                await self.ctx.monitor.stop(container_id, timeout=0, sig=signal.SIGKILL))

    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.RemoveContainerResponse:
        require(request.container_id, "container_id")
        try:
            rec = self.container(request.container_id)
        except NotFound:
            return pb.RemoveContainerResponse()  # idempotent
        await self.remove_container(rec)
        return pb.RemoveContainerResponse()

    async def remove_container(self, rec: ContainerRecord) -> None:
        """Force-stop, then drop the process record, the rootfs and the metadata."""
        await self.kill_container(rec.id)
        with contextlib.suppress(monitor.NotFound):
            await self.ctx.monitor.delete(rec.id)
        self.ctx.states.drop(rec.id)
        self.ctx.metadata.forget(rec.id)
        Bundle(self.ctx.bundle_dir(rec.id)).remove()
        self.ctx.store.containers.delete(rec.id)
