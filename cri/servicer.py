"""Base for servicers: any CRI method not written yet answers UNIMPLEMENTED by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, ClassVar

import grpc

from cri.grpccall import RpcContext
from proto import api_pb2


@cache
def method_names(service: str) -> frozenset[str]:
    return frozenset(m.name for m in api_pb2.DESCRIPTOR.services_by_name[service].methods)


async def _unimplemented(rpc: str, request: Any, context: RpcContext) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not implemented by berth")


class CriServicer:
    """Mixins per RPC group fill in methods; the rest fall through to UNIMPLEMENTED."""

    service: ClassVar[str]

    def __getattr__(self, name: str) -> Callable[[Any, RpcContext], Awaitable[None]]:
        if name in method_names(self.service):
            rpc = f"{self.service}.{name}"
            return lambda request, context: _unimplemented(rpc, request, context)
        raise AttributeError(name)
