"""Minimal rtnetlink client: importing pyroute2 costs ~170 ms per plugin exec, this costs ~1 ms."""

from __future__ import annotations

import _socket
import errno
import os
import struct

from cni_plugins import lean

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 1, 4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_FD = 12, 18, 28
IFLA_BRPORT_MODE, NLA_F_NESTED = 4, 0x8000
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT = 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RTNH_F_ONLINK = 4
NDA_DST, NDA_LLADDR = 1, 2
NTF_SELF, NTF_MASTER = 0x02, 0x04
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
IFF_UP, IFF_PROMISC = 0x1, 0x100
AF_INET, AF_INET6, AF_BRIDGE = _socket.AF_INET, _socket.AF_INET6, 7

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")


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

    def __init__(
        self,
        index: int,
        name: str,
        flags: int,
        mac: str,
        mtu: int,
        master: int,
        kind: str = "",
        info: dict[int, bytes] | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.flags = flags
        self.mac = mac
        self.mtu = mtu
        self.master = master
        self.kind = kind  # IFLA_INFO_KIND: "bridge", "veth", "vxlan", "" for physical links
        self.info = info or {}  # IFLA_INFO_DATA attributes, e.g. the VXLAN id and port


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

    def add_bridge(self, name: str, mtu: int = 0, mac: str = "") -> None:
        """A fixed `mac` keeps the bridge's address from following its lowest port's: without
        one the kernel moves it each time a port with a lower MAC joins or the lowest leaves,
        and every member's cached neighbour entry for the gateway goes stale (frames to the old
        MAC are not the host's), cutting it off for seconds until it asks again."""
        attrs = _attr(IFLA_IFNAME, name.encode() + b"\0")
        if mtu:
            attrs += _attr(IFLA_MTU, struct.pack("=I", mtu))
        if mac:
            attrs += _attr(IFLA_ADDRESS, mac_bytes(mac))
        attrs += _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"bridge"))
        payload = _IFINFO.pack(0, 0, 0, 0, 0) + attrs
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload)

    def add_vxlan(
        self, name: str, vni: int, port: int, local: str, underlay: int, mtu: int
    ) -> None:
        """Unicast VXLAN without learning: its FDB is exactly what the plugin writes."""
        data = (
            _attr(IFLA_VXLAN_ID, struct.pack("=I", vni))
            + _attr(IFLA_VXLAN_LOCAL, _socket.inet_pton(AF_INET, local))
            + _attr(IFLA_VXLAN_LEARNING, b"\0")
            + _attr(IFLA_VXLAN_PORT, struct.pack("!H", port))
        )
        if underlay:
            data += _attr(IFLA_VXLAN_LINK, struct.pack("=I", underlay))
        info = _attr(IFLA_INFO_KIND, b"vxlan") + _attr(IFLA_INFO_DATA, data)
        payload = (
            _IFINFO.pack(0, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_MTU, struct.pack("=I", mtu))
            + _attr(IFLA_LINKINFO, info)
        )
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
        mac: str = "",
    ) -> None:
        """`mac` set on a bridge, even to the address it has, fixes it as add_bridge's does."""
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
        if mac:
            attrs += _attr(IFLA_ADDRESS, mac_bytes(mac))
        payload = _IFINFO.pack(0, 0, index, flags, change) + attrs
        self.request(RTM_NEWLINK, NLM_F_ACK, payload)

    def set_hairpin(self, index: int) -> None:
        """Netlink, not /sys/class/net: sysfs shows the netns that mounted it, not ours."""
        protinfo = _attr(IFLA_PROTINFO | NLA_F_NESTED, _attr(IFLA_BRPORT_MODE, b"\1"))
        self.request(RTM_SETLINK, NLM_F_ACK, _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + protinfo)

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

    def del_addr(self, index: int, addr: str, prefixlen: int) -> None:
        family = AF_INET6 if ":" in addr else AF_INET
        raw = _socket.inet_pton(family, addr)
        payload = _IFADDR.pack(family, prefixlen, 0, 0, index) + _attr(IFA_LOCAL, raw)
        self.request(RTM_DELADDR, NLM_F_ACK, payload)

    def add_route(
        self, dst: str, prefixlen: int, gw: str | None, index: int, *, onlink: bool = False
    ) -> None:
        """`onlink`: the gateway is reachable on the link even outside its subnets (overlay)."""
        self._route(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, dst, prefixlen, gw,
                    index, RTNH_F_ONLINK if onlink else 0)

    def del_route(self, dst: str, prefixlen: int, gw: str | None, index: int) -> None:
        self._route(RTM_DELROUTE, NLM_F_ACK, dst, prefixlen, gw, index, 0)

    def _route(
        self, kind: int, flags: int, dst: str, plen: int, gw: str | None, index: int, rflags: int
    ) -> None:
        family = AF_INET6 if ":" in dst else AF_INET
        scope = 0 if gw else 253  # universe via a gateway, link scope otherwise
        payload = _RTMSG.pack(family, plen, 0, 0, 254, 3, scope, 1, rflags)
        if plen:
            payload += _attr(RTA_DST, _socket.inet_pton(family, dst))
        if gw:
            payload += _attr(RTA_GATEWAY, _socket.inet_pton(family, gw))
        payload += _attr(RTA_OIF, struct.pack("=I", index))
        self.request(kind, flags, payload)

    def routes(self, family: int = AF_INET) -> list[tuple[str, int, str, int]]:
        """(dst, prefixlen, gateway or "", oif) of every route in the main table."""
        payload = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        replies = self.request(RTM_GETROUTE, NLM_F_DUMP, payload)
        out = []
        for mtype, body in replies:
            fam, plen, _s, _t, table, _p, _sc, _ty, _f = _RTMSG.unpack_from(body)
            attrs = _parse_attrs(body[_RTMSG.size :])
            table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
            if mtype != RTM_NEWROUTE or table != 254:
                continue
            dst = _socket.inet_ntop(fam, attrs[RTA_DST]) if RTA_DST in attrs else ""
            gw = _socket.inet_ntop(fam, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else ""
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
            out.append((dst, plen, gw, oif))
        return out

    # neighbours and forwarding database entries

    def set_neigh(
        self,
        index: int,
        mac: str,
        ip: str = "",
        *,
        family: int = AF_INET,
        state: int = NUD_PERMANENT,
        flags: int = 0,
    ) -> None:
        """ARP entry (AF_INET) or FDB entry (AF_BRIDGE: `ip` is a VXLAN's remote, flags say
        whether the bridge (NTF_MASTER) or the device itself (NTF_SELF) holds it)."""
        nlflags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self.request(RTM_NEWNEIGH, nlflags, self._neigh(index, mac, ip, family, state, flags))

    def del_neigh(
        self, index: int, mac: str, ip: str = "", *, family: int = AF_INET, flags: int = 0
    ) -> None:
        self.request(RTM_DELNEIGH, NLM_F_ACK, self._neigh(index, mac, ip, family, 0, flags))

    def neighs(self, family: int, index: int) -> list[tuple[str, str, int]]:
        """(ip or "", mac, state) of the entries on one link; AF_BRIDGE lists its FDB."""
        payload = _NDMSG.pack(family, 0, 0, 0, 0)
        out = []
        for mtype, body in self.request(RTM_GETNEIGH, NLM_F_DUMP, payload):
            fam, idx, state, _flags, _type = _NDMSG.unpack_from(body)
            if mtype != RTM_NEWNEIGH or idx != index:
                continue
            attrs = _parse_attrs(body[_NDMSG.size :])
            raw = attrs.get(NDA_DST, b"")
            ip = _socket.inet_ntop(AF_INET6 if len(raw) == 16 else AF_INET, raw) if raw else ""
            mac = ":".join(f"{b:02x}" for b in attrs.get(NDA_LLADDR, b""))
            out.append((ip, mac, state))
        return out

    @staticmethod
    def _neigh(index: int, mac: str, ip: str, family: int, state: int, flags: int) -> bytes:
        payload = _NDMSG.pack(family, index, state, flags, 0)
        if ip:
            payload += _attr(NDA_DST, _socket.inet_pton(AF_INET6 if ":" in ip else AF_INET, ip))
        return payload + _attr(NDA_LLADDR, mac_bytes(mac))


def _parse_link(body: bytes) -> Link:
    _fam, _type, index, flags, _change = _IFINFO.unpack_from(body)
    attrs = _parse_attrs(body[_IFINFO.size :])
    mac = attrs.get(IFLA_ADDRESS, b"")
    linkinfo = _parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    return Link(
        index=index,
        name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
        flags=flags,
        mac=":".join(f"{b:02x}" for b in mac),
        mtu=struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
        master=struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0,
        kind=linkinfo.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(),
        info=_parse_attrs(linkinfo.get(IFLA_INFO_DATA, b"")),
    )


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def random_mac() -> str:
    """A locally administered unicast address, for a bridge that must keep one (add_bridge)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


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
