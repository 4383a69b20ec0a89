"""Compose the RPC-group mixins into the two CRI services and serve them with grpc.aio."""

from __future__ import annotations

import grpc

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

MiB = 1024 * 1024
# Requests: CRI's largest (CreateContainer with its annotations and mounts) is kilobytes; grpcio's
# 4 MiB default is what kubelet's own client library assumes a server accepts.
MAX_RECEIVE = 4 * MiB
# Replies: kubelet's client accepts 16 MiB (ListContainers on a full node, ExecSync's output cap).
MAX_SEND = 16 * MiB
# Per connection. kubelet multiplexes everything on one connection: ~110 pods with a few exec
# probes each stays far below; a client asking more is queued by its own HTTP/2 stack.
MAX_STREAMS = 1000
# In flight across all connections; beyond it a call gets RESOURCE_EXHAUSTED, not memory.
MAX_RPCS = 4096
# Connections at once. kubelet holds one or two, crictl one per command; 2048 leaves room for
# every tool on a node while an fd leak in a client cannot eat berthd's 20000 fds.
MAX_CONNECTIONS = 2048

OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE),
    ("grpc.max_send_message_length", MAX_SEND),
    ("grpc.max_concurrent_streams", MAX_STREAMS),
    ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
    # Request headers: 16 KiB hard (grpcio's default), 8 KiB soft. kubelet sends a few hundred
    # bytes; grpc-go clients also cap the list at 16 KiB by default on their side.
    ("grpc.max_metadata_size", 8 * 1024),
    ("grpc.absolute_max_metadata_size", 16 * 1024),
    # A client that connects and never speaks HTTP/2 is dropped after 10 s instead of 120.
    ("grpc.server_handshake_timeout_ms", 10_000),
    # Keepalive: berthd pings an idle connection every 2 h (a unix socket reports a dead peer by
    # itself; the ping catches a hung one) and drops it after 20 s without an answer.
    ("grpc.keepalive_time_ms", 2 * 3600 * 1000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Ping policy, the same as grpc-go's (containerd's) enforcement: a client may ping at most
    # every 5 minutes without calls in flight, twice too often earns GOAWAY ENHANCE_YOUR_CALM.
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5 * 60 * 1000),
    ("grpc.http2.max_ping_strikes", 2),
    # Pings berthd itself may send with no data in between (keepalive only).
    ("grpc.http2.max_pings_without_data", 2),
]


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


def build(ctx: Context, interceptor: RpcInterceptor) -> grpc.aio.Server:
    """A grpc.aio server with both services and the limits above (docs/config.md explains each)."""
    server = grpc.aio.server(interceptors=[interceptor], options=OPTIONS,
                             maximum_concurrent_rpcs=MAX_RPCS)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeService(ctx), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(ctx), server)
    return server
