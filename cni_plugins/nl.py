"""Minimal rtnetlink client: importing pyroute2 costs ~170 ms per plugin exec, this costs ~1 ms."""

from __future__ import annotations

import _socket
import errno
import os
import struct

from cni_plugins import lean

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 1, 4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_FD = 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP, IFF_PROMISC = 0x1, 0x100
AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    pad = (4 - length % 4) % 4
    return struct.pack("=HH", length, kind) + data + b"\0" * pad


def _parse_attrs(data: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        attrs[kind & 0x7FFF] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return attrs


class Link:
    """The fields of RTM_NEWLINK that plugins actually look at."""

    def __init__(self, index: int, name: str, flags: int, mac: str, mtu: int, master: int) -> None:
        self.index = index
        self.name = name
        self.flags = flags
        self.mac = mac
        self.mtu = mtu
        self.master = master


class Netlink:
    """One NETLINK_ROUTE socket; it stays bound to the netns that was current when it was made."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request and collect replies until ACK/DONE; kernel errors become OSError."""
        self.seq += 1
        seq = self.seq
        msg = _HDR.pack(_HDR.size + len(payload), kind, flags | NLM_F_REQUEST, seq, 0) + payload
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + _HDR.size <= len(data):
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, pos)
                body = data[pos + _HDR.size : pos + length]
                pos += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, body))
                if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                    return out

    # links

    def get_link(self, name: str) -> Link | None:
        payload = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            replies = self.request(RTM_GETLINK, 0, payload)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return _parse_link(replies[0][1]) if replies else None

    def add_bridge(self, name: str, mtu: int = 0) -> None:
        attrs = _attr(IFLA_IFNAME, name.encode() + b"\0")
        if mtu:
            attrs += _attr(IFLA_MTU, struct.pack("=I", mtu))
        attrs += _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"bridge"))
        payload = _IFINFO.pack(0, 0, 0, 0, 0) + attrs
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int = 0) -> None:
        """Create the pair with the peer born inside the pod netns, which saves a move."""
        mtu_attr = _attr(IFLA_MTU, struct.pack("=I", mtu)) if mtu else b""
        peer_msg = (
            _IFINFO.pack(0, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, peer.encode() + b"\0")
            + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
            + mtu_attr
        )
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_msg)
        )
        payload = (
            _IFINFO.pack(0, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + mtu_attr
            + _attr(IFLA_LINKINFO, info)
        )
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload)

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        master: int | None = None,
        promisc: bool | None = None,
        mtu: int = 0,
    ) -> None:
        flags = change = 0
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        attrs = b""
        if master is not None:
            attrs += _attr(IFLA_MASTER, struct.pack("=I", master))
        if mtu:
            attrs += _attr(IFLA_MTU, struct.pack("=I", mtu))
        payload = _IFINFO.pack(0, 0, index, flags, change) + attrs
        self.request(RTM_NEWLINK, NLM_F_ACK, payload)

    def del_link(self, index: int) -> None:
        self.request(RTM_DELLINK, NLM_F_ACK, _IFINFO.pack(0, 0, index, 0, 0))

    def links(self) -> list[Link]:
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0))
        return [_parse_link(body) for mtype, body in replies if mtype == RTM_NEWLINK]

    # addresses and routes

    def add_addr(self, index: int, addr: str, prefixlen: int, *, replace_ok: bool = False) -> None:
        family = AF_INET6 if ":" in addr else AF_INET
        raw = _socket.inet_pton(family, addr)
        payload = _IFADDR.pack(family, prefixlen, 0, 0, index)
        payload += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        try:
            self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload)
        except FileExistsError:
            if not replace_ok:
                raise

    def addrs(self, index: int = 0) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) for every address, optionally on one link."""
        replies = self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(0, 0, 0, 0, 0))
        out = []
        for mtype, body in replies:
            if mtype != RTM_NEWADDR:
                continue
            family, plen, _f, _s, idx = _IFADDR.unpack_from(body)
            attrs = _parse_attrs(body[_IFADDR.size :])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw and (not index or idx == index):
                out.append((idx, _socket.inet_ntop(family, raw), plen))
        return out

    def add_route(self, dst: str, prefixlen: int, gw: str | None, index: int) -> None:
        family = AF_INET6 if ":" in dst else AF_INET
        scope = 0 if gw else 253  # universe via a gateway, link scope otherwise
        payload = _RTMSG.pack(family, prefixlen, 0, 0, 254, 3, scope, 1, 0)
        if prefixlen:
            payload += _attr(RTA_DST, _socket.inet_pton(family, dst))
        if gw:
            payload += _attr(RTA_GATEWAY, _socket.inet_pton(family, gw))
        payload += _attr(RTA_OIF, struct.pack("=I", index))
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload)


def _parse_link(body: bytes) -> Link:
    _fam, _type, index, flags, _change = _IFINFO.unpack_from(body)
    attrs = _parse_attrs(body[_IFINFO.size :])
    mac = attrs.get(IFLA_ADDRESS, b"")
    return Link(
        index=index,
        name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
        flags=flags,
        mac=":".join(f"{b:02x}" for b in mac),
        mtu=struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
        master=struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0,
    )


class in_netns:  # noqa: N801 - used like a function, as a context manager
    """Switch this (single-threaded) process into a netns and back; yields the netns fd."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.target = self.home = -1

    def __enter__(self) -> int:
        self.target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            lean.setns(self.target)
        except OSError:
            self._close()
            raise
        return self.target

    def __exit__(self, *exc: object) -> None:
        try:
            lean.setns(self.home)
        finally:
            self._close()

    def _close(self) -> None:
        os.close(self.home)
        os.close(self.target)


def write_sysctl(path: str, value: str) -> None:
    """Sysctls under /proc/sys/net follow the netns current at open() time; path uses '/'."""
    with open("/proc/sys/" + path, "w") as f:
        f.write(value)
