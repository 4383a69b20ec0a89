"""Port forwarding: each forwarded connection is a helper process (`nsenter --net` + socat)
dialling 127.0.0.1:port inside the pod's network namespace, because berthd is threaded and
must not setns itself."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

from cri.streaming.spdyconn import Connection, Stream
from cri.streaming.wschannel import Channels

PROTOCOL = "portforward.k8s.io"
MAX_PAIRS = 64  # concurrent forwarded connections per session
LINGER = 5  # socat's seconds to finish one direction after the other ended
CHUNK = 32 << 10


def helper_argv(netns: str, port: int) -> list[str]:
    """socat between its stdio and the port; nsenter first unless the pod uses the host's."""
    cmd = ["socat", "-t", str(LINGER), "STDIO", f"TCP:127.0.0.1:{port}"]
    return (["nsenter", f"--net={netns}", *cmd]) if netns else cmd


async def forward(netns: str, port: int, read: Callable[[], Awaitable[bytes]],
                  write: Callable[[bytes], Awaitable[None]]) -> str:
    """Copy both ways until the target closes; returns an error message ("" if none)."""
    proc = await asyncio.create_subprocess_exec(
        *helper_argv(netns, port), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr

    async def inbound() -> None:
        assert proc.stdin
        with contextlib.suppress(ConnectionError):
            while data := await read():
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

    async def outbound() -> None:
        assert proc.stdout
        while data := await proc.stdout.read(CHUNK):
            await write(data)

    feeder = asyncio.ensure_future(inbound())
    try:
        await outbound()
        err = (await proc.stderr.read(4096)).decode(errors="replace").strip()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        proc.stdin.close()
    return err if proc.returncode not in (0, -9) and err else ""


class SpdyForwarder:
    """Pairs each connection's error and data streams by requestid, then forwards."""

    def __init__(self, conn: Connection, pod_id: str, netns: str) -> None:
        self.conn, self.pod_id, self.netns = conn, pod_id, netns
        self.pending: dict[str, dict[str, Stream]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def on_stream(self, st: Stream) -> bool:
        kind, rid = st.header("streamtype"), st.header("requestid")
        if kind not in ("error", "data") or not st.header("port").isdigit():
            return False
        if not rid:  # clients before requestid: the error stream precedes its data stream
            rid = str(st.id if kind == "error" else st.id - 2)
        pair = self.pending.setdefault(rid, {})
        if kind in pair or len(self.tasks) >= MAX_PAIRS or len(self.pending) > MAX_PAIRS:
            return False
        pair[kind] = st
        if len(pair) == 2:
            del self.pending[rid]
            task = asyncio.ensure_future(self._run(pair["data"], pair["error"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return True

    async def _run(self, data: Stream, error: Stream) -> None:
        port = int(data.header("port"))
        try:
            err = await forward(self.netns, port, data.read, data.write)
        except OSError as exc:
            err = str(exc)
        if err:
            await error.write(f"error forwarding port {port} to pod {self.pod_id}: {err}"
                              .encode())
        await data.close()
        await error.close()

    async def serve(self) -> None:
        """Until the client hangs up (or berthd stops); then every helper is stopped."""
        try:
            await self.conn.closed.wait()
        finally:
            self.conn.shutdown()
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def serve_ws(ch: Channels, pod_id: str, netns: str, ports: list[int]) -> None:
    """Channel 2i carries port i's data, 2i+1 its errors; each opens with the port number."""
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue(16) for _ in ports]
    for i, port in enumerate(ports):
        await ch.send(2 * i, struct.pack("<H", port))
        await ch.send(2 * i + 1, struct.pack("<H", port))

    async def route() -> None:
        try:
            async for channel, data in ch.messages():
                if channel % 2 == 0 and channel // 2 < len(ports) and data:
                    await inboxes[channel // 2].put(data)
        finally:
            for q in inboxes:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(b"")

    async def one(i: int, port: int) -> None:
        async def send(data: bytes) -> None:
            await ch.send(2 * i, data)
        try:
            err = await forward(netns, port, inboxes[i].get, send)
        except OSError as exc:
            err = str(exc)
        if err:
            await ch.send(2 * i + 1, f"error forwarding port {port} to pod {pod_id}: {err}"
                          .encode())

    async def all_ports() -> None:
        await asyncio.gather(*(one(i, p) for i, p in enumerate(ports)))

    router = asyncio.ensure_future(route())
    workers = asyncio.ensure_future(all_ports())
    try:
        await asyncio.wait({router, workers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (router, workers):
            t.cancel()
        await asyncio.gather(router, workers, return_exceptions=True)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ch.ws.close()
