"""CRI container log files: the line format kubelet parses, written and read back.

Each record is `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\\n`. A line longer than
`MAX_LINE` bytes is cut into `P` records; a line without its newline at end of stream is written
as `P` too. Timestamps are UTC with nine fractional digits, which Go's `time.RFC3339Nano` parses.
"""

from __future__ import annotations

import calendar
import os
import time
from dataclasses import dataclass, field

MAX_LINE = 16 * 1024
STREAMS = ("stdout", "stderr")
TAG_PARTIAL = b"P"
TAG_FULL = b"F"


def format_timestamp(ns: int) -> str:
    """RFC3339 with fixed nanoseconds, as containerd writes, so lines sort as strings."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def parse_timestamp(text: str) -> int:
    """Inverse of format_timestamp for UTC stamps; tests use it to check ordering."""
    base, _, frac = text.rstrip("Z").partition(".")
    tm = time.strptime(base, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(tm) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)


@dataclass(frozen=True)
class LogRecord:
    """One parsed record of a CRI log file."""

    timestamp: str
    stream: str
    partial: bool
    content: bytes


def parse_line(line: bytes) -> LogRecord:
    """Split one record (without its newline); raises ValueError on a malformed line."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1].decode() not in STREAMS or parts[2] not in (b"P", b"F"):
        raise ValueError(f"malformed CRI log line: {line[:80]!r}")
    content = parts[3] if len(parts) == 4 else b""
    return LogRecord(parts[0].decode(), parts[1].decode(), parts[2] == b"P", content)


def parse_log(data: bytes) -> list[LogRecord]:
    """Parse a whole log file; a torn last line (no newline) is an error, not skipped."""
    if data and not data.endswith(b"\n"):
        raise ValueError("CRI log does not end with a newline")
    return [parse_line(line) for line in data.split(b"\n")[:-1]]


def join_lines(records: list[LogRecord], stream: str | None = None) -> list[bytes]:
    """Reassemble P…F runs into the lines the container wrote, per stream as kubelet does."""
    out: list[bytes] = []
    pending: dict[str, bytes] = {}
    for r in records:
        if stream is not None and r.stream != stream:
            continue
        acc = pending.pop(r.stream, b"") + r.content
        if r.partial:
            pending[r.stream] = acc
        else:
            out.append(acc)
    out.extend(v for v in pending.values() if v)
    return out


@dataclass
class CriLogWriter:
    """Turns raw stream chunks into CRI records; reopen() follows a logrotate rename."""

    path: str
    max_line: int = MAX_LINE
    fd: int = -1
    _pending: dict[str, bytearray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes) -> None:
        """Emit every complete line now and keep the tail until its newline or the size cap."""
        pending = self._pending.pop(stream, None)
        if pending:
            data = bytes(pending) + data
        lines = data.split(b"\n")
        tail = lines.pop()
        prefix = f"{format_timestamp(time.time_ns())} {stream} ".encode()
        full, part = prefix + TAG_FULL + b" ", prefix + TAG_PARTIAL + b" "
        if lines and max(map(len, lines)) <= self.max_line:  # the common case, at C speed
            out = full + (b"\n" + full).join(lines) + b"\n"
        else:
            recs = []
            for line in lines:
                while len(line) > self.max_line:
                    recs.append(part + line[: self.max_line])
                    line = line[self.max_line :]
                recs.append(full + line)
            out = b"\n".join(recs) + b"\n" if recs else b""
        while len(tail) >= self.max_line:
            out += part + tail[: self.max_line] + b"\n"
            tail = tail[self.max_line :]
        if tail:
            self._pending[stream] = bytearray(tail)
        if out:
            self._emit(out)

    def flush(self, stream: str) -> None:
        """End of stream: a trailing line without newline becomes a partial record."""
        buf = self._pending.pop(stream, None)
        if buf:
            stamp = format_timestamp(time.time_ns())
            self._emit(f"{stamp} {stream} P ".encode() + bytes(buf) + b"\n")

    def _emit(self, out: bytes | bytearray) -> None:
        view = memoryview(out)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def reopen(self) -> None:
        """Open the path anew (creating it), so a renamed file stops growing."""
        new = self._open()
        os.close(self.fd)
        self.fd = new

    def close(self) -> None:
        """Flush both streams' tails and release the file (even when the flush fails)."""
        try:
            for stream in list(self._pending):
                self.flush(stream)
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
