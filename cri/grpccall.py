"""gRPC's rules over one HTTP/2 stream: methods from the descriptors, the length-prefixed
message, grpc-timeout, the status trailers, and the context a servicer is handed.

h2 (cri/h2conn.py) owns the HTTP/2 state machine; what is here is the part of gRPC no maintained
Python library offers a server for without bringing its own transport: the gRPC-over-HTTP/2
wire rules (PROTOCOL-HTTP2.md in grpc/grpc), which are a few fixed formats, not a state machine.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from proto import api_pb2

PACKAGE = "runtime.v1"
# grpc-timeout: at most 8 ASCII digits and a unit (PROTOCOL-HTTP2.md); re.ASCII keeps "\d"
# from matching other scripts' digits.
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])", re.ASCII)
_UNIT = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# grpc-message is percent-encoded: everything outside printable ASCII, and "%" itself.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

# Read-only calls answered from memory (the metadata cache, the stats sampler's last answer,
# constants): their first step runs in the read that brought them, with no task unless they wait
# (cri/eagerstep.py). Every other call starts as a task: its code may need a current task from
# its first line (PullImage's httpx runs on anyio).
EAGER = frozenset({
    "Version", "Status", "RuntimeConfig", "ListPodSandbox", "ListContainers", "ListImages",
    "PodSandboxStatus", "ContainerStatus", "ImageStatus", "ImageFsInfo", "ContainerStats",
    "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "ListMetricDescriptors",
    "ListPodSandboxMetrics",
})

Unary = Callable[[Any, "RpcContext"], Awaitable[Any]]
Streaming = Callable[[Any, "RpcContext"], AsyncIterator[Any]]


class CallError(Exception):
    """A call ends with this status; raised by RpcContext.abort and by the framing checks."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RpcContext:
    """What servicers and the interceptor use of a call: abort, and the status set so far."""

    __slots__ = ("_code", "_details")

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with this status (grpc.aio's contract: it raises, never returns)."""
        self._code, self._details = code, details
        raise CallError(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details


@dataclass(frozen=True)
class Method:
    """One RPC: its handler and its message classes, looked up once when the server starts."""

    name: str  # "Version"
    request: type[Message]
    streaming: bool  # server-streaming (CRI has no client-streaming RPC)
    handler: Callable[..., Any]
    eager: bool  # in EAGER


def methods(servicers: dict[str, object],
            wrap: Callable[[str, Callable[..., Any], bool], Callable[..., Any]]
            ) -> dict[str, Method]:
    """`/runtime.v1.Service/Name` -> Method for every RPC of each service in the descriptors;
    wrap(name, handler, streaming) puts the interceptor around each handler."""
    table: dict[str, Method] = {}
    for service, servicer in servicers.items():
        for m in api_pb2.DESCRIPTOR.services_by_name[service].methods:
            request = message_factory.GetMessageClass(m.input_type)
            handler = wrap(m.name, getattr(servicer, m.name), m.server_streaming)
            table[f"/{PACKAGE}.{service}/{m.name}"] = Method(m.name, request, m.server_streaming,
                                                             handler, m.name in EAGER)
    return table


def timeout_of(value: str | None) -> float | None:
    """Seconds from a grpc-timeout header; a malformed one is the call's error, as in grpc-go."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise CallError(grpc.StatusCode.INTERNAL, f"malformed grpc-timeout: {value!r}")
    return int(match[1]) * _UNIT[match[2]]


def message_length(prefix: bytes | bytearray, limit: int) -> int:
    """The length a message's 5-byte prefix announces, refused before any of it is buffered
    when it is over the receive limit or compressed (berthd advertises no grpc-encoding)."""
    if prefix[0] != 0:
        raise CallError(grpc.StatusCode.UNIMPLEMENTED,
                        "compressed messages are not accepted (no grpc-encoding is advertised)")
    length = int.from_bytes(prefix[1:5], "big")
    if length > limit:
        raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"received message larger than max ({length} vs. {limit})")
    return length


def request_of(method: Method, body: bytes | bytearray, limit: int) -> Message:
    """The one request message of a unary or server-streaming call, whole and nothing after."""
    if len(body) < 5:
        raise CallError(grpc.StatusCode.INTERNAL, "the request carried no message")
    length = message_length(body[:5], limit)
    if len(body) != 5 + length:
        raise CallError(grpc.StatusCode.INTERNAL, f"the request message announced {length} "
                        f"bytes and brought {len(body) - 5}")
    request = method.request()
    try:
        request.ParseFromString(bytes(body[5:]))
    except DecodeError as exc:
        raise CallError(grpc.StatusCode.INTERNAL, f"cannot parse the request: {exc}") from None
    return request


def framed(reply: Message | bytes, limit: int) -> bytes:
    """A reply as one length-prefixed message; handlers may hand back bytes already serialised
    (the list cache)."""
    data = reply if type(reply) is bytes else reply.SerializeToString()  # type: ignore[union-attr]
    if len(data) > limit:
        raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"sent message larger than max ({len(data)} vs. {limit})")
    return b"\0" + len(data).to_bytes(4, "big") + data


def trailers(code: grpc.StatusCode, details: str | None) -> list[tuple[str, str]]:
    out = [("grpc-status", str(code.value[0]))]
    if details:
        out.append(("grpc-message", urllib.parse.quote(details, safe=_MESSAGE_SAFE)))
    return out
