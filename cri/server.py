"""Compose the RPC-group mixins into the two CRI services and serve them on the CRI socket
(h2 for HTTP/2, cri/h2conn.py for the limits, cri/grpccall.py for gRPC's wire rules)."""

from __future__ import annotations

import asyncio
import os

import structlog

from cri.container import ContainerRPCs
from cri.container_status import ContainerStatusRPCs
from cri.context import Context
from cri.events import EventRPCs
from cri.exec import ExecRPCs
from cri.grpccall import methods
from cri.h2conn import CriConnection
from cri.h2policy import CallBudget, Limits
from cri.images import ImageRPCs
from cri.interceptor import RpcInterceptor
from cri.runtime_info import RuntimeInfoRPCs
from cri.sandbox import SandboxRPCs
from cri.servicer import CriServicer
from cri.stats import StatsRPCs
from cri.stream_rpcs import StreamRPCs

log = structlog.get_logger("cri.transport")

MiB = 1024 * 1024
LIMITS = Limits(
    # Requests: CRI's largest (CreateContainer with its annotations and mounts) is kilobytes;
    # grpcio's 4 MiB default is what kubelet's own client library assumes a server accepts.
    max_receive=4 * MiB,
    # Replies: kubelet's client accepts 16 MiB (ListContainers on a full node, ExecSync's cap).
    max_send=16 * MiB,
    # Per connection. kubelet multiplexes everything on one connection: ~110 pods with a few
    # exec probes each stays far below; h2 ends a connection that opens more (PROTOCOL_ERROR).
    max_streams=1000,
    # Request headers: kubelet sends a few hundred bytes; grpc-go clients cap the list at
    # 16 KiB on their side too.
    max_header_list=16 * 1024,
    # Request bytes held for calls whose message is not complete yet, per connection.
    buffered_per_connection=32 * MiB,
    # Replies waiting for a peer that does not read; past this, its requests are not read.
    write_high_water=1 * MiB,
    # A client that connects and never speaks HTTP/2 is dropped after 10 s.
    handshake_timeout=10.0,
    # Keepalive: berthd pings every 2 h (a unix socket reports a dead peer by itself; the ping
    # catches a hung one) and drops the connection after 20 s without an answer.
    keepalive_time=2 * 3600.0,
    keepalive_timeout=20.0,
    # Ping policy as grpc-go's (containerd's) enforcement: pings closer than 5 minutes with
    # nothing sent in between are strikes, the third earns GOAWAY ENHANCE_YOUR_CALM.
    ping_min_interval=5 * 60.0,
    ping_strikes=2,
    # Rapid reset (CVE-2023-44487): past 1000 resets, and more than twice the calls answered,
    # GOAWAY ENHANCE_YOUR_CALM.
    reset_budget=1000,
)
# Connections at once. kubelet holds one or two, crictl one per command; 2048 leaves room for
# every tool on a node while an fd leak in a client cannot eat berthd's 20000 fds.
MAX_CONNECTIONS = 2048
# In flight across all connections; beyond it a call gets RESOURCE_EXHAUSTED, not memory.
MAX_CALLS = 4096
# Connections the kernel queues before berthd accepts them.
BACKLOG = 1024


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


class CriServer:
    """The CRI socket: one CriConnection per client, at most MAX_CONNECTIONS at once."""

    def __init__(self, ctx: Context, interceptor: RpcInterceptor) -> None:
        self.table = methods({"RuntimeService": RuntimeService(ctx),
                              "ImageService": ImageService(ctx)}, interceptor.wrap)
        self.connections: set[CriConnection] = set()
        self.budget = CallBudget(MAX_CALLS)
        self.server: asyncio.AbstractServer | None = None

    def _connection(self) -> CriConnection:
        conn = CriConnection(self.table, LIMITS, self.budget, self.connections.discard)
        if len(self.connections) >= MAX_CONNECTIONS:
            log.warning("connection refused", reason="connection limit", limit=MAX_CONNECTIONS)
            conn.abort()  # closes the transport as soon as it is made
        else:
            self.connections.add(conn)
        return conn

    async def start(self, path: str) -> None:
        self.server = await asyncio.get_running_loop().create_unix_server(
            self._connection, path, backlog=BACKLOG)
        os.chmod(path, 0o660)

    async def stop(self, grace: float) -> None:
        """Stop accepting, GOAWAY every connection, let calls finish for `grace` seconds."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.goaway()
        calls = [task for conn in self.connections for task in conn.calls.values()]
        if calls:
            await asyncio.wait(calls, timeout=grace)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)  # connection_lost cancels what is left
