"""cri/h2grpc.py against grpcio's own client: statuses, flow control, streams, deadlines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.h2grpc import Server


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def big(request: bytes, context: Any) -> bytes:
    return bytes(range(256)) * (int(request) // 256)


async def fail(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: é\nsecond line %")
    return b""


async def crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("boom")


async def slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request))
    assert asyncio.current_task() is not None
    return b"late"


async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield b"%d:" % i + b"x" * 4096


async def forever(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        CANCELLED.set()
        raise
    yield b"never"


CANCELLED = threading.Event()
UNARY = {"Echo": echo, "Big": big, "Fail": fail, "Crash": crash, "Slow": slow}
STREAM = {"Count": count, "Forever": forever}


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    sock = tmp_path_factory.mktemp("h2") / "s.sock"
    loop = asyncio.new_event_loop()
    # Echo, Fail and Slow run eagerly (Slow hands over to a task at its sleep); the rest in tasks
    server = Server(max_message=1 << 20, eager=[f"/t.S/{n}" for n in ("Echo", "Fail", "Slow")])
    handlers = {n: grpc.unary_unary_rpc_method_handler(f) for n, f in UNARY.items()}
    handlers |= {n: grpc.unary_stream_rpc_method_handler(f) for n, f in STREAM.items()}
    server.add_registered_method_handlers("t.S", handlers)
    server.add_insecure_port(f"unix://{sock}")
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ch = grpc.insecure_channel(f"unix://{sock}")
    yield ch
    ch.close()
    asyncio.run_coroutine_threadsafe(server.stop(1), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    Path(sock).unlink(missing_ok=True)


def call(ch: grpc.Channel, name: str, req: bytes, timeout: float = 10) -> Any:
    return ch.unary_unary(f"/t.S/{name}")(req, timeout=timeout)


def test_unary_small_and_large_both_ways(channel: grpc.Channel) -> None:
    assert call(channel, "Echo", b"") == b""
    payload = b"abc" * 300_000  # many DATA frames and window updates in
    assert call(channel, "Echo", payload) == payload
    # out: past the default 64 KiB window, so the client's WINDOW_UPDATEs must be honoured
    assert call(channel, "Big", b"3000000") == bytes(range(256)) * (3000000 // 256)


def test_errors_carry_code_and_details(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Fail", b"")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "no such thing: é\nsecond line %"
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Crash", b"")
    assert info.value.code() == grpc.StatusCode.UNKNOWN and "boom" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Nope", b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Echo", b"x" * (2 << 20))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call(channel, "Echo", b"still fine") == b"still fine"


def test_deadline_exceeded(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Slow", b"5", timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert call(channel, "Slow", b"0.01") == b"late"


def test_server_stream_under_flow_control(channel: grpc.Channel) -> None:
    items = list(channel.unary_stream("/t.S/Count")(b"500", timeout=30))
    assert len(items) == 500 and items[499].startswith(b"499:")


def test_client_cancel_reaches_the_handler(channel: grpc.Channel) -> None:
    it = channel.unary_stream("/t.S/Forever")(b"", timeout=30)
    assert next(it) == b"first"
    it.cancel()
    assert CANCELLED.wait(5)


def test_concurrent_calls(channel: grpc.Channel) -> None:
    futures = [channel.unary_unary("/t.S/Echo").future(b"%d" % i, timeout=10)
               for i in range(200)]
    assert [f.result() for f in futures] == [b"%d" % i for i in range(200)]
