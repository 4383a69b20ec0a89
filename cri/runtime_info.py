"""Version, Status and RuntimeConfig: what kubelet asks before anything else."""

from __future__ import annotations

import json
from importlib.metadata import version

import grpc

from cri.context import Context
from proto import api_pb2

RUNTIME_NAME = "berth"
CRI_API_VERSION = "v1"


class RuntimeInfoRPCs:
    """Readiness and identity; never touches the kernel beyond cheap reads."""

    ctx: Context

    async def Version(self, request: api_pb2.VersionRequest,
                      context: grpc.aio.ServicerContext) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(
            version="0.1.0",
            runtime_name=RUNTIME_NAME,
            runtime_version=version("berth"),
            runtime_api_version=CRI_API_VERSION,
        )

    async def Status(self, request: api_pb2.StatusRequest,
                     context: grpc.aio.ServicerContext) -> api_pb2.StatusResponse:
        runtime_ok, runtime_reason, runtime_msg = self.ctx.runtime_ready()
        net_ok, net_reason, net_msg = self.ctx.network_ready()
        status = api_pb2.RuntimeStatus(conditions=[
            api_pb2.RuntimeCondition(type="RuntimeReady", status=runtime_ok,
                                     reason=runtime_reason, message=runtime_msg),
            api_pb2.RuntimeCondition(type="NetworkReady", status=net_ok,
                                     reason=net_reason, message=net_msg),
        ])
        info: dict[str, str] = {}
        if request.verbose:
            info["config"] = json.dumps(self.ctx.describe_config())
            info["cgroup"] = json.dumps({"version": self.ctx.cgroup_version,
                                         "driver": self.ctx.config.runtime.cgroup_driver})
        return api_pb2.StatusResponse(status=status, info=info)

    async def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest,
                            context: grpc.aio.ServicerContext) -> api_pb2.RuntimeConfigResponse:
        driver = (api_pb2.CgroupDriver.SYSTEMD if self.ctx.config.runtime.cgroup_driver == "systemd"
                  else api_pb2.CgroupDriver.CGROUPFS)
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver))
