"""The embedded DNS of user networks: one listener per network on its bridge's gateway address.

Docker answers at 127.0.0.11 inside each container's netns; Berth's equivalent listens on the
gateway of every user network (UDP and TCP port 53, in berthd's own event loop) and containers'
resolv.conf names that address. Names the network owns (container names, aliases, short ids of
the containers on the querying container's networks) are answered here; every other name goes
to the host's resolvers (from the host's /etc/resolv.conf, asked from the host) when forwarding
is on, and is answered REFUSED when it is off. dnspython does the wire format both ways; only
the two-byte length of DNS over TCP is read here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import structlog

IP_FREEBIND = 15  # <linux/in.h>; Python's socket module does not name it
log = structlog.get_logger("netdns")
PORT = 53
TTL = 600  # dockerd's
UPSTREAM_TIMEOUT = 3.0
TCP_IDLE = 10.0
MAX_TCP_CLIENTS = 256  # per network; past it a new connection is closed at once

# (network the query came in on, client address, lower-case name without the final dot) ->
# the IPv4 addresses it has, or None when the name is not the network's
Resolve = Callable[[str, str, str], list[str] | None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: EmbeddedDNS, net_id: str) -> None:
        self.server, self.net_id = server, net_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a selector's, not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        out = await self.server.answer(self.net_id, addr[0], data, tcp=False)
        if out is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(out, addr)


class _Listener:
    """The UDP endpoint and TCP server of one network, and its open TCP connections."""

    def __init__(self, udp: asyncio.DatagramTransport, tcp: asyncio.Server) -> None:
        self.udp, self.tcp = udp, tcp
        self.clients: set[asyncio.StreamWriter] = set()

    async def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        for w in list(self.clients):
            w.close()
        await self.tcp.wait_closed()


class EmbeddedDNS:
    """All networks' listeners; `resolve` says what each network owns."""

    def __init__(self, resolve: Resolve, forward: bool) -> None:
        self.resolve = resolve
        self.forward = forward
        self.listeners: dict[str, _Listener] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._upstreams: list[str] | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def listen(self, net_id: str, address: str) -> None:
        """Bind UDP and TCP on address:53. IP_FREEBIND: an overlay network's gateway address
        is put on its bridge by the vxlan plugin at the first container's ADD, not before."""
        if net_id in self.listeners:
            return
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self, net_id), sock=_bound(socket.SOCK_DGRAM, address))
        try:
            holder: list[_Listener] = []

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._tcp_client(net_id, holder[0], reader, writer)

            tcp = await asyncio.start_server(serve, sock=_bound(socket.SOCK_STREAM, address))
        except BaseException:
            udp.close()
            raise
        holder.append(_Listener(udp, tcp))
        self.listeners[net_id] = holder[0]

    async def close(self, net_id: str) -> None:
        listener = self.listeners.pop(net_id, None)
        if listener is not None:
            await listener.close()

    async def close_all(self) -> None:
        for net_id in list(self.listeners):
            await self.close(net_id)
        for task in list(self.tasks):
            task.cancel()

    async def _tcp_client(self, net_id: str, listener: _Listener, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(listener.clients) >= MAX_TCP_CLIENTS:
            writer.close()
            return
        listener.clients.add(writer)
        client = str((writer.get_extra_info("peername") or ("", 0))[0])
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(
                    reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE)
                out = await self.answer(net_id, client, data, tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            listener.clients.discard(writer)
            writer.close()

    async def answer(self, net_id: str, client: str, data: bytes, tcp: bool) -> bytes | None:
        """The reply's wire bytes; None drops a message that is not a DNS query at all."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            reply.set_rcode(dns.rcode.NOTIMP)
            return self._wire(reply, query, tcp)
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        ips = self.resolve(net_id, client, name) if q.rdclass == dns.rdataclass.IN else None
        if ips is not None:
            reply.flags |= dns.flags.AA
            if q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and ips:
                reply.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "A", ips))
            return self._wire(reply, query, tcp)  # AAAA and the rest: no data, no error
        if self.forward:
            forwarded = await self._forward(query, tcp)
            if forwarded is not None:
                return forwarded
            reply.set_rcode(dns.rcode.SERVFAIL)
        else:
            reply.set_rcode(dns.rcode.REFUSED)
        return self._wire(reply, query, tcp)

    @staticmethod
    def _wire(reply: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
        limit = 65535 if tcp else (max(query.payload, 512) if query.edns >= 0 else 512)
        try:
            return reply.to_wire(max_size=limit)
        except dns.exception.TooBig:
            reply.answer.clear()
            reply.flags |= dns.flags.TC
            return reply.to_wire(max_size=limit)

    def upstreams(self) -> list[str]:
        """The host's resolvers, read once (a small file, the first time a name is forwarded)."""
        if self._upstreams is None:
            try:
                host = dns.resolver.Resolver(configure=True)
                self._upstreams = [str(s) for s in host.nameservers]
            except dns.exception.DNSException:
                self._upstreams = []
        return self._upstreams

    async def _forward(self, query: dns.message.Message, tcp: bool) -> bytes | None:
        """Ask each host resolver in turn, from the host; the first answer is passed on."""
        for server in self.upstreams():
            with contextlib.suppress(dns.exception.DNSException, OSError):
                if tcp:
                    got = await dns.asyncquery.tcp(query, server, timeout=UPSTREAM_TIMEOUT)
                else:
                    got = await dns.asyncquery.udp(query, server, timeout=UPSTREAM_TIMEOUT,
                                                   ignore_trailing=True)
                return self._wire(got, query, tcp)
        log.debug("no upstream resolver answered", name=str(query.question[0].name))
        return None


def _bound(kind: int, address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, PORT))
    except BaseException:
        sock.close()
        raise
    return sock
