"""Container lifecycle RPCs: create (spec + rootfs + monitor), start, stop, remove."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cri import ocispec, podconfig, samples
from cri.context import Context
from cri.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    require,
)
from cri.grpccall import RpcContext
from cri.images import check_ref
from cri.podconfig import check_name
from engine import containers as lifecycle
from engine.ids import lookup, new_id
from engine.store import ContainerRecord, NameTaken, PodRecord
from proto import api_pb2 as pb
from runtime.images.records import ImageConfig
from runtime.init import InitError
from runtime.procuser import process_user, user_string


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
    """The security context's user wins over the image's; runtime.procuser holds the rule."""
    sec = cfg.linux.security_context
    if sec.HasField("run_as_group") and not (sec.HasField("run_as_user") or sec.run_as_username):
        raise InvalidArgument("security_context.run_as_group needs run_as_user or "
                              "run_as_username (CRI: the runtime must refuse it alone)")
    if sec.HasField("run_as_user") and sec.run_as_user.value < 0:
        raise InvalidArgument(f"run_as_user {sec.run_as_user.value} must not be negative")
    who = user_string(image.user,
                      uid=sec.run_as_user.value if sec.HasField("run_as_user") else None,
                      username=sec.run_as_username,
                      gid=sec.run_as_group.value if sec.HasField("run_as_group") else None)
    strict = sec.supplemental_groups_policy == pb.SupplementalGroupsPolicy.Strict
    try:
        return process_user(str(rootfs), who, list(sec.supplemental_groups),
                            image_groups=not strict).as_tuple()
    except (InitError, LookupError, ValueError) as exc:  # LookupError: not in the image
        raise InvalidArgument(str(exc)) from None


class ContainerRPCs:
    """The monitor holds the processes; berthd holds the CRI view and the rootfs mounts."""

    ctx: Context
    if TYPE_CHECKING:  # provided by SandboxRPCs and EventRPCs in the composed servicer
        def pod(self, given: str) -> PodRecord: ...

    def container(self, given: str) -> ContainerRecord:
        return lookup(self.ctx.store.containers, given, "container")

    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: RpcContext) -> pb.CreateContainerResponse:
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
            await lifecycle.create_container(
                self.ctx, rec, image, lambda rootfs: self._spec(rec, pod, cfg, image, rootfs),
                lifecycle.Stdio(log_path=self._log_path(pod, cfg), tty=cfg.tty, stdin=cfg.stdin,
                                stdin_once=cfg.stdin_once),
                stop_signal(cfg, image.config), cfg.metadata.name,
                userns=ocispec.user_namespace(cfg))
        except NameTaken as exc:
            raise AlreadyExists(f"container name {cfg.metadata.name} (attempt "
                                f"{cfg.metadata.attempt}) in pod {pod.id} is already reserved "
                                f"by {exc}") from None
        return pb.CreateContainerResponse(container_id=cid)

    def _spec(self, rec: ContainerRecord, pod: PodRecord, cfg: pb.ContainerConfig,
              image: Any, rootfs: Path) -> dict[str, Any]:
        image_cfg = image.config
        extra = pod.extra
        pod_cfg = pb.PodSandboxConfig.FromString(pod.config)
        pod_ctx = ocispec.PodContext(id=pod.id, ns_paths=extra.get("ns", {}),
                                     files=extra.get("files", {}),
                                     cgroup_parent=extra.get("cgroup_parent") or "berth",
                                     hostname=podconfig.hostname(pod_cfg))
        return ocispec.build_spec(container_id=rec.id, cfg=cfg, image=image_cfg, pod=pod_ctx,
                                  user=user_of(rootfs, cfg, image_cfg), tty=cfg.tty,
                                  cdi_dirs=self.ctx.config.cdi.spec_dirs)

    @staticmethod
    def _log_path(pod: PodRecord, cfg: pb.ContainerConfig) -> str:
        pod_cfg = pb.PodSandboxConfig.FromString(pod.config)
        if pod_cfg.log_directory and cfg.log_path:
            return str(Path(pod_cfg.log_directory) / cfg.log_path)
        return ""

    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: RpcContext) -> pb.StartContainerResponse:
        rec = self.container(request.container_id)
        await lifecycle.start(self.ctx, rec)
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: RpcContext) -> pb.StopContainerResponse:
        rec = self.container(request.container_id)
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} must not be negative")
        await lifecycle.stop(self.ctx, rec, request.timeout)
        return pb.StopContainerResponse()

    async def kill_container(self, container_id: str) -> None:
        """Used when a pod stops: no grace, like containerd's forced sandbox stop."""
        await lifecycle.kill(self.ctx, container_id)

    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: RpcContext) -> pb.RemoveContainerResponse:
        require(request.container_id, "container_id")
        try:
            rec = self.container(request.container_id)
        except NotFound:
            return pb.RemoveContainerResponse()  # idempotent
        await self.remove_container(rec)
        return pb.RemoveContainerResponse()

    async def remove_container(self, rec: ContainerRecord) -> None:
        """Force-stop, then drop the process record, the rootfs and the metadata."""
        await lifecycle.remove(self.ctx, rec)
        self.ctx.metadata.forget(rec.id)
        await asyncio.to_thread(samples.forget, self.ctx.config.state_dir, rec.id)
