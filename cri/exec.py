"""ExecSync: run a command in a running container and return its capped output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cri.context import Context
from cri.errors import (
    CriError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from cri.grpccall import RpcContext
from engine.store import ContainerRecord
from proto import api_pb2 as pb
from runtime import containers as monitor

# CVE-2022-31030 was unbounded ExecSync output. Both streams together must fit kubelet's 16 MiB
# gRPC message limit, so each gets half of it less room for the envelope.
MAX_OUTPUT = (16 << 20) // 2 - (64 << 10)


def exec_process(rec: ContainerRecord, cmd: list[str], tty: bool = False) -> dict[str, Any]:
    """The container's own process settings (user, env, caps, cwd) with a new command."""
    if not cmd or not cmd[0]:
        raise InvalidArgument("cmd is required")
    process = dict(rec.extra.get("process") or {})
    process.update(args=list(cmd), terminal=tty)
    return process


class ExecRPCs:
    ctx: Context
    if TYPE_CHECKING:
        def container(self, given: str) -> ContainerRecord: ...

    async def ExecSync(self, request: pb.ExecSyncRequest,
                       context: RpcContext) -> pb.ExecSyncResponse:
        rec = self.container(request.container_id)
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} must not be negative")
        process = exec_process(rec, list(request.cmd))
        try:
            res = await self.ctx.monitor.exec_sync(rec.id, process, timeout=request.timeout,
                                                   max_output=MAX_OUTPUT)
        except monitor.InvalidState as exc:
            raise FailedPrecondition(f"container {rec.id} is not running: {exc}") from None
        except monitor.NotFound:
            raise NotFound(f"container {rec.id} has no process") from None
        except monitor.MonitorError as exc:
            raise Internal(f"exec in {rec.id}: {exc}") from None
        except ConnectionError as exc:  # UNKNOWN, as containerd's "failed while waiting for exec"
            raise CriError(f"exec in {rec.id}: its exit status is unknown: the connection to "
                           f"the berth monitor broke ({exc})") from None
        if res.timed_out:
            raise DeadlineExceeded(f"command {request.cmd[0]} timed out after "
                                   f"{request.timeout}s")
        return pb.ExecSyncResponse(stdout=res.stdout, stderr=res.stderr,
                                   exit_code=res.exit_code)
