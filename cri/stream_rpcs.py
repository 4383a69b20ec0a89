"""Exec, Attach and PortForward: validate, then hand out a one-time URL on the streaming
server (kubelet proxies the user's stream to it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri.context import Context
from cri.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cri.exec import exec_process
from cri.grpccall import RpcContext
from cri.sandbox import READY
from cri.streaming.tokens import AttachJob, ExecJob, Job, PortForwardJob, TooManyPending
from engine.store import ContainerRecord, PodRecord
from proto import api_pb2 as pb
from runtime import containers as monitor
from runtime.monitor.state import RUNNING


def check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    """kubelet's own rules: something to stream, and a tty has no separate stderr."""
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")


class StreamRPCs:
    ctx: Context
    if TYPE_CHECKING:
        def container(self, given: str) -> ContainerRecord: ...
        def pod(self, given: str) -> PodRecord: ...

    async def _running(self, given: str) -> ContainerRecord:
        rec = self.container(given)
        try:
            st = await self.ctx.monitor.state(rec.id)
        except monitor.NotFound:
            raise NotFound(f"container {rec.id} has no process") from None
        if st.status != RUNNING:
            raise FailedPrecondition(f"container {rec.id} is not running ({st.status})")
        return rec

    def _url(self, kind: str, job: Job) -> str:
        server = self.ctx.streaming
        if server is None:
            raise Unavailable("the streaming server is not running")
        try:
            return server.url(kind, job)
        except TooManyPending as exc:
            raise Unavailable(str(exc)) from None

    async def Exec(self, request: pb.ExecRequest,
                   context: RpcContext) -> pb.ExecResponse:
        check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        rec = await self._running(request.container_id)
        cmd = list(request.cmd)
        job = ExecJob(rec.id, cmd, exec_process(rec, cmd, request.tty), request.tty,
                      request.stdin, request.stdout, request.stderr)
        return pb.ExecResponse(url=self._url("exec", job))

    async def Attach(self, request: pb.AttachRequest,
                     context: RpcContext) -> pb.AttachResponse:
        check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        rec = await self._running(request.container_id)
        job = AttachJob(rec.id, request.tty, request.stdin, request.stdout, request.stderr)
        return pb.AttachResponse(url=self._url("attach", job))

    async def PortForward(self, request: pb.PortForwardRequest,
                          context: RpcContext) -> pb.PortForwardResponse:
        rec = self.pod(request.pod_sandbox_id)
        if rec.state != READY:
            raise FailedPrecondition(f"pod sandbox {rec.id} is not ready")
        for port in request.port:
            if not 0 < port < 65536:
                raise InvalidArgument(f"port {port} is out of range")
        netns = "" if rec.extra.get("host_network") else rec.extra.get("ns", {}).get("network")
        if netns is None:
            raise FailedPrecondition(f"pod sandbox {rec.id} has no network namespace")
        job = PortForwardJob(rec.id, netns, list(request.port))
        return pb.PortForwardResponse(url=self._url("portforward", job))
