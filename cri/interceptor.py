"""One place that times, logs and counts every RPC, so servicers stay about CRI."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog

from cri.errors import CriError, code_of
from cri.grpccall import RpcContext

log = structlog.get_logger("rpc")

Observer = Callable[[str, str, float], None]


MAX_DETAILS = 2048

# Read-only RPCs kubelet polls every second or so: logged at debug, as containerd does.
QUIET = frozenset({
    "Version", "Status", "RuntimeConfig", "ListPodSandbox", "ListContainers", "ListImages",
    "PodSandboxStatus", "ContainerStatus", "ImageStatus", "ImageFsInfo", "ContainerStats",
    "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "ListMetricDescriptors",
    "ListPodSandboxMetrics", "StreamPodSandboxes", "StreamContainers", "StreamContainerStats",
    "StreamImages", "StreamPodSandboxMetrics", "StreamPodSandboxStats",
})
_PREFIX = uuid.uuid4().hex[:8]
_SEQ = itertools.count(1)


def request_id() -> str:
    """Unique per process start and per call, without a uuid4 per RPC."""
    return f"{_PREFIX}{next(_SEQ):08x}"


def _bounded(details: str) -> str:
    """Messages echo request fields; gRPC drops a reply whose status exceeds 16 KiB of metadata."""
    if len(details) <= MAX_DETAILS:
        return details
    return f"{details[:MAX_DETAILS]}... ({len(details) - MAX_DETAILS} more characters)"


def _code_of(context: RpcContext, exc: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.UNKNOWN if exc is not None else grpc.StatusCode.OK


class RpcInterceptor:
    """Wraps unary and server-streaming handlers with a request id, duration and status."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers = observers or []
        # Built after logging is configured; a polled call then skips even the filtered call.
        fresh = structlog.get_logger().bind()  # not `log`: its first use fixed its level
        self._debug = bool(getattr(fresh, "is_enabled_for", lambda _: True)(logging.DEBUG))

    def _finish(self, method: str, rid: str, started: float, code: grpc.StatusCode,
                details: str | None) -> None:
        elapsed = time.perf_counter() - started
        ok = code is grpc.StatusCode.OK
        if not ok or self._debug or method not in QUIET:
            fields: dict[str, Any] = {"method": method, "request_id": rid,
                                      "duration_ms": round(elapsed * 1000, 3), "code": code.name}
            if not ok:
                log.warning("rpc", details=details, **fields)
            elif method in QUIET:
                log.debug("rpc", **fields)
            else:
                log.info("rpc", **fields)
        if self.observers:  # after the reply is on its way: metrics are not the caller's wait
            asyncio.get_running_loop().call_soon(self._observe, method, code.name, elapsed)

    def _observe(self, method: str, code: str, elapsed: float) -> None:
        for observe in self.observers:
            observe(method, code, elapsed)

    def wrap(self, method: str, handler: Callable[..., Any], streaming: bool
             ) -> Callable[..., Any]:
        """The handler the server calls for `method` (cri/grpccall.methods builds the table)."""
        return self._wrap_stream(method, handler) if streaming else \
            self._wrap_unary(method, handler)

    def _wrap_unary(self, method: str, inner: Any) -> Any:
        async def wrapper(request: Any, context: RpcContext) -> Any:
            rid = request_id()
            started = time.perf_counter()
            # Bound in the call's own context (cri/eagerstep.py), which ends with the call:
            # nothing to unbind.
            structlog.contextvars.bind_contextvars(request_id=rid, method=method)
            exc: BaseException | None = None
            try:
                return await inner(request, context)
            except CriError as e:
                exc = e
                await context.abort(code_of(e), _bounded(f"{method}: {e}"))
            except BaseException as e:
                exc = e
                if not isinstance(e, Exception) or context.code() is not None:
                    raise
                log.exception("rpc handler crashed", method=method, request_id=rid)
                await context.abort(grpc.StatusCode.INTERNAL,
                                    _bounded(f"{method}: internal error: {e}"))
            finally:
                self._finish(method, rid, started, _code_of(context, exc), context.details())

        return wrapper

    def _wrap_stream(self, method: str, inner: Any) -> Any:
        async def wrapper(request: Any, context: RpcContext) -> AsyncIterator[Any]:
            rid = request_id()
            started = time.perf_counter()
            exc: BaseException | None = None
            try:
                async for item in inner(request, context):
                    yield item
            except CriError as e:
                exc = e
                await context.abort(code_of(e), _bounded(f"{method}: {e}"))
            except BaseException as e:
                exc = e
                raise
            finally:
                self._finish(method, rid, started, _code_of(context, exc), context.details())

        return wrapper
