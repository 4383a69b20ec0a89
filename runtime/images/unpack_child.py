"""An unpack worker process: pulled layers unpack here, one at a time, outside berthd's GIL.

A layer of small files costs more Python per file (tar headers, the applier) than kernel time,
and two unpack threads in one process spend much of it handing the GIL back and forth: the
python bench image's eleven layers unpacked in 2.8 s on two threads, 1.9 s on one, and 1.1 s
in two processes (journaled ext4, two cores). So berthd keeps one of these per unpack slot
(`unpack_procs`).

The worker reads the layer's blob file itself. While the blob still downloads, berthd follows
each chunk its fetch thread wrote with the blob's new length on a pipe (8 bytes, little-endian),
and closes the pipe at the blob's end; so no layer byte passes through a pipe.

The wire is one Unix stream socket: a request is one byte carrying the blob's fd, the snapshot
dir's lock fd and, while the blob downloads, the pipe's (SCM_RIGHTS), then a framed JSON header
(multiprocessing's Connection framing); the reply is one framed JSON message, and after a good
one a byte carrying the fds of the files the commit will fsync. The worker unpacks with the same
code an in-process unpack uses (`unpack_detached`) and sends back what resolve needs later,
since resolve runs in berthd once the parents are committed. It exits when berthd closes the
socket (or dies); `unpack_worker` is its entry point.
"""

from __future__ import annotations

import json
import os
import socket
from multiprocessing.connection import Connection
from typing import Any

from runtime.images.applier import Applier, Link, UnpackError, UnpackResult
from runtime.images.compression import Counted
from runtime.images.unpack import Detached, unpack_detached

READY = b"R"  # the first byte a worker sends: its imports are done


def encode(d: Detached, input_digest: str | None) -> dict[str, Any]:
    """What berthd needs of an unpacked layer: the result, and the applier's records for
    resolve; the fds it kept for the flush follow the reply (SCM_RIGHTS)."""
    ap, r = d.applier, d.result
    return {
        "ok": True, "diff_id": r.diff_id, "tar_bytes": r.tar_bytes, "file_bytes": r.file_bytes,
        "entries": r.entries, "input_digest": input_digest, "many_files": ap.many_files,
        "fds": len(ap.written),
        "implicit": list(ap.implicit.items()), "dir_times": ap.dir_times,
        "links": [[x.rel, x.ino, x.target] for x in ap.links],
    }


def decode(msg: dict[str, Any], root: str, cap: int, written: list[int]) -> Detached:
    """The layer as an in-process unpack would have left it, with the written files' fds that
    came with the reply."""
    ap = Applier(-1, None, cap, file_bytes=int(msg["file_bytes"]), written=written,
                 dir_times=[(str(rel), int(ns)) for rel, ns in msg["dir_times"]],
                 implicit={str(rel): int(ino) for rel, ino in msg["implicit"]},
                 links=[Link(str(rel), int(ino), [str(p) for p in t])
                        for rel, ino, t in msg["links"]],
                 many_files=bool(msg["many_files"]))
    result = UnpackResult(str(msg["diff_id"]), int(msg["tar_bytes"]), int(msg["file_bytes"]),
                          int(msg["entries"]))
    return Detached(root, result, ap)


def failure(e: BaseException) -> dict[str, Any]:
    """An error as the reply carries it: berthd raises the same kind again."""
    if isinstance(e, UnpackError):
        return {"ok": False, "kind": "unpack", "message": str(e)}
    if isinstance(e, OSError) and e.errno is not None:
        return {"ok": False, "kind": "os", "errno": e.errno, "message": e.strerror or str(e),
                "filename": None if e.filename is None else str(e.filename)}
    return {"ok": False, "kind": "other", "message": f"{type(e).__name__}: {e}"}


class Following:
    """The blob file, readable as far as berthd said it is written (all of it without a pipe)."""

    def __init__(self, fd: int, pipe: int | None) -> None:
        self.fd, self.pipe = fd, pipe
        self.pos = 0
        self.written = 0 if pipe is not None else 1 << 62

    def readinto(self, b: memoryview) -> int:
        while self.pos >= self.written and self.pipe is not None:
            news = os.read(self.pipe, 8 * 64)  # each write is 8 bytes: reads come whole
            if not news:
                self.close_pipe()  # the end of the blob
                return 0
            self.written = int.from_bytes(news[-8:], "little")
        n = os.preadv(self.fd, [b[: self.written - self.pos]], self.pos)
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(n if n >= 0 else 1 << 20)
        return bytes(buf[: self.readinto(memoryview(buf))])

    def close_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None


def unpack_one(req: dict[str, Any], fds: list[int]) -> tuple[Detached, str | None]:
    """One layer into req["root"]. fds: the blob; the snapshot dir's lock, held here too, so that
    a berthd that starts after a crash never removes the dir while this still writes in it; and,
    while the blob downloads, the pipe that follows it. A failed layer closes the pipe at once:
    berthd's next write to it fails. Also the blob's digest when req["hash"]; the caller
    closes the applier's kept fds."""
    src = Following(fds[0], fds[2] if len(fds) > 2 else None)
    try:
        counted = Counted(src, 1 << 62) if req["hash"] else None
        detached = unpack_detached(counted or src, req["root"], req["media_type"],
                                   int(req["max_bytes"]))
        try:
            buf = memoryview(bytearray(1 << 16))
            while (counted or src).readinto(buf):  # the rest (the tar's padding), to the end
                pass
        except BaseException:
            detached.applier.close()
            raise
    finally:
        src.close_pipe()
        os.close(fds[0])
        os.close(fds[1])
    return detached, None if counted is None else "sha256:" + counted.h.hexdigest()


def serve(sock: socket.socket) -> None:
    """Layers until berthd closes the socket."""
    conn = Connection(os.dup(sock.fileno()))
    sock.sendall(READY)
    while True:
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 3)
        except ConnectionError:
            return
        if not fds:
            return  # berthd closed the socket: it stops us, or it is gone
        kept: list[int] = []
        try:
            req = json.loads(conn.recv_bytes())
            detached, digest = unpack_one(req, fds)
            kept = detached.applier.written
            reply = encode(detached, digest)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the pull
            reply = failure(e)
        try:
            conn.send_bytes(json.dumps(reply).encode())
            if kept:  # berthd flushes them before the commit, while this unpacks the next
                socket.send_fds(sock, [b"\0"], kept)
        except OSError:
            return
        finally:
            for fd in kept:
                os.close(fd)
