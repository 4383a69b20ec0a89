"""Compose the RPC-group mixins into the two CRI services and serve them on one socket."""

from __future__ import annotations

import grpc

from cri import h2grpc
from cri.container import ContainerRPCs
from cri.container_status import ContainerStatusRPCs
from cri.context import Context
from cri.events import EventRPCs
from cri.exec import ExecRPCs
from cri.images import ImageRPCs
from cri.interceptor import RpcInterceptor
from cri.runtime_info import RuntimeInfoRPCs
from cri.sandbox import SandboxRPCs
from cri.servicer import CriServicer
from cri.stats import StatsRPCs
from cri.stream_rpcs import StreamRPCs
from proto import api_pb2_grpc

MAX_MESSAGE = 16 * 1024 * 1024
# Answered from memory, and nothing before their first await needs a current task.
EAGER = [f"/runtime.v1.RuntimeService/{m}" for m in (
    "Version", "RuntimeConfig", "ListPodSandbox", "ListContainers", "PodSandboxStatus")]


class RuntimeService(RuntimeInfoRPCs, SandboxRPCs, ContainerRPCs, ContainerStatusRPCs, ExecRPCs,
                     EventRPCs, StatsRPCs, StreamRPCs, CriServicer):
    service = "RuntimeService"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.hub = ctx.hub


class ImageService(ImageRPCs, CriServicer):
    service = "ImageService"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx


def build(ctx: Context, interceptor: RpcInterceptor) -> grpc.aio.Server | h2grpc.Server:
    """A gRPC server with both services; kubelet's message size limit of 16 MiB both ways."""
    server: grpc.aio.Server | h2grpc.Server
    if ctx.config.grpc_server == "h2":
        server = h2grpc.Server([interceptor], MAX_MESSAGE, EAGER)
    else:
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeService(ctx), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(ctx), server)
    return server
