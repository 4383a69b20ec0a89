"""Version, Status and RuntimeConfig: what kubelet asks before anything else."""

from __future__ import annotations

import ipaddress
import json
from functools import cache
from importlib.metadata import version

from cri.context import Context
from cri.errors import InvalidArgument
from cri.grpccall import RpcContext
from proto import api_pb2 as pb

RUNTIME_NAME = "berth"
CRI_API_VERSION = "v1"


@cache
def version_response() -> pb.VersionResponse:
    """importlib.metadata scans sys.path on every call: read the installed version once."""
    return pb.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                              runtime_version=version("berth"),
                              runtime_api_version=CRI_API_VERSION)


class RuntimeInfoRPCs:
    """Readiness and identity; never touches the kernel beyond cheap reads."""

    ctx: Context

    async def Version(self, request: pb.VersionRequest,
                      context: RpcContext) -> pb.VersionResponse:
        return version_response()

    async def Status(self, request: pb.StatusRequest,
                     context: RpcContext) -> pb.StatusResponse:
        runtime_ok, runtime_reason, runtime_msg = self.ctx.runtime_ready()
        net_ok, net_reason, net_msg = self.ctx.network_ready()
        status = pb.RuntimeStatus(conditions=[
            pb.RuntimeCondition(type="RuntimeReady", status=runtime_ok,
                                     reason=runtime_reason, message=runtime_msg),
            pb.RuntimeCondition(type="NetworkReady", status=net_ok,
                                     reason=net_reason, message=net_msg),
        ])
        info: dict[str, str] = {}
        if request.verbose:
            info["config"] = json.dumps(self.ctx.describe_config())
            info["cgroup"] = json.dumps({"version": self.ctx.cgroup_version,
                                         "driver": self.ctx.config.runtime.cgroup_driver})
        return pb.StatusResponse(status=status, info=info)

    async def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest,
                                  context: RpcContext
                                  ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise InvalidArgument(f"pod_cidr '{cidr}' is not a network") from None
            self.ctx.network.update_pod_cidr(cidr)
        return pb.UpdateRuntimeConfigResponse()

    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest,
                            context: RpcContext) -> pb.RuntimeConfigResponse:
        driver = (pb.CgroupDriver.SYSTEMD if self.ctx.config.runtime.cgroup_driver == "systemd"
                  else pb.CgroupDriver.CGROUPFS)
        return pb.RuntimeConfigResponse(
            linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))
