"""The embedded DNS on a real socket (a random 127/8 address, port 53): what it owns, what it
refuses with forwarding off, and hostile input. Never forwards (network-safety rule)."""

from __future__ import annotations

import asyncio
import random
import socket

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from engine.netdns import EmbeddedDNS

NAMES = {"web": ["10.91.7.2"], "many": [f"10.91.8.{i}" for i in range(1, 120)]}


def _addr() -> str:
    return f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def _resolve(net: str, client: str, name: str) -> list[str] | None:
    assert net == "net1"
    return NAMES.get(name)


async def _with_server(body):  # type: ignore[no-untyped-def]
    server = EmbeddedDNS(_resolve, forward=False)
    addr = _addr()
    await server.listen("net1", addr)
    try:
        return await body(addr)
    finally:
        await server.close_all()


def test_answers_owned_names_refuses_the_rest() -> None:
    async def body(addr: str) -> None:
        got = await dns.asyncquery.udp(dns.message.make_query("web", "A"), addr, timeout=5)
        assert got.rcode() == dns.rcode.NOERROR and got.flags & dns.flags.AA
        assert [r.address for r in got.answer[0]] == ["10.91.7.2"]
        assert got.answer[0].ttl == 600
        six = await dns.asyncquery.udp(dns.message.make_query("WEB.", "AAAA"), addr, timeout=5)
        assert six.rcode() == dns.rcode.NOERROR and not six.answer  # owned: no data, no error
        other = await dns.asyncquery.udp(dns.message.make_query("example.org", "A"), addr,
                                         timeout=5)
        assert other.rcode() == dns.rcode.REFUSED and not other.answer
        tcp = await dns.asyncquery.tcp(dns.message.make_query("web", "A"), addr, timeout=5)
        assert [r.address for r in tcp.answer[0]] == ["10.91.7.2"]

    asyncio.run(_with_server(body))


def test_big_answer_truncated_on_udp_whole_on_tcp() -> None:
    async def body(addr: str) -> None:
        q = dns.message.make_query("many", "A")
        udp = await dns.asyncquery.udp(q, addr, timeout=5)
        assert udp.flags & dns.flags.TC and not udp.answer
        tcp = await dns.asyncquery.tcp(q, addr, timeout=5)
        assert len(tcp.answer[0]) == len(NAMES["many"])

    asyncio.run(_with_server(body))


def test_garbage_and_odd_queries_do_not_stop_it() -> None:
    async def body(addr: str) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for junk in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x00" * 10 + b"\x07abc"):
                await loop.sock_sendto(s, junk, (addr, 53))
        notify = dns.message.make_query("web", "A")
        notify.set_opcode(dns.opcode.NOTIFY)
        got = await dns.asyncquery.udp(notify, addr, timeout=5)
        assert got.rcode() == dns.rcode.NOTIMP
        reply = dns.message.make_response(dns.message.make_query("web", "A"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a reply is not a query
            s.setblocking(False)
            await loop.sock_sendto(s, reply.to_wire(), (addr, 53))
        reader, writer = await asyncio.open_connection(addr, 53)  # a TCP length, then nothing
        writer.write(b"\x00\x40abc")
        await writer.drain()
        writer.close()
        ok = await dns.asyncquery.udp(dns.message.make_query("web", "A"), addr, timeout=5)
        assert [r.address for r in ok.answer[0]] == ["10.91.7.2"]

    asyncio.run(_with_server(body))
