"""Wire format shared by the monitor and its clients: JSON lines, then optional frames.

Request: `{"rid": n, "op": "...", ...args}`. Reply: `{"rid": n, "ok": true, "result": ...}` or
`{"rid": n, "ok": false, "error": kind, "message": ...}`, kind being the `kind` of one of the
error classes below. The `attach`, `exec_stream` and `events` ops turn their connection into a
stream after the reply: frames with a 5-byte header (kind, big-endian length) for the first
two, JSON lines for events.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

VERSION = 1  # bumped on incompatible changes; ping reports it so berthd can spot an old monitor
FRAME = struct.Struct(">BI")
STDIN, STDOUT, STDERR, RESIZE, CLOSE_STDIN, EXIT = range(6)
MAX_FRAME = 1 << 20
MAX_LINE = 64 << 20  # an exec_sync reply carries up to 2 x 16 MiB, base64-encoded


class MonitorError(Exception):
    """A request the monitor refused; `kind` names the class of error on the wire."""

    kind = "Error"


class NotFound(MonitorError):
    """No container (or exec) with that id."""

    kind = "NotFound"


class AlreadyExists(MonitorError):
    """The id is taken."""

    kind = "AlreadyExists"


class InvalidState(MonitorError):
    """The container is in the wrong state for the request (e.g. delete while running)."""

    kind = "InvalidState"


class InvalidArgument(MonitorError):
    """The request itself is wrong (e.g. an id that is not a safe file name)."""

    kind = "InvalidArgument"


ERRORS: dict[str, type[MonitorError]] = {
    c.kind: c for c in (MonitorError, NotFound, AlreadyExists, InvalidState, InvalidArgument)
}


def encode(msg: dict[str, Any]) -> bytes:
    """One JSON line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One stream frame."""
    return FRAME.pack(kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """Next frame, or None at a clean end of stream; oversize frames are a protocol error."""
    try:
        head = await reader.readexactly(FRAME.size)
    except asyncio.IncompleteReadError:
        return None
    kind, size = FRAME.unpack(head)
    if size > MAX_FRAME:
        raise MonitorError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    try:
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
