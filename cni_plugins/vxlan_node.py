"""The node side of the vxlan plugin: bridge, VXLAN port, and per-peer FDB, ARP and routes.

Everything the plugin creates is recorded (in order) in the node record, so the last pod's DEL
removes exactly that, in reverse, and nothing an operator or another tool made before us.
How a packet crosses: pod -> node bridge (gateway, routes) -> route to a peer's subnet via the
peer's bridge address (onlink) -> static ARP entry gives the peer bridge's MAC -> the bridge's
static FDB entry sends that MAC out of the VXLAN port -> the VXLAN device's own FDB entry names
the peer's underlay IP -> UDP to the peer -> its VXLAN port -> its bridge, whose own MAC it is.
"""

from __future__ import annotations

import errno

from cni_plugins import nl, skel
from cni_plugins.skel import CNIError
from cni_plugins.vxlan_conf import VXLAN_OVERHEAD, NodeConf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Entry = list[Any]

E_NODE_STATE = 100  # plugin-specific (CNI allows >= 100): CHECK found the node side changed
_GONE = (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENXIO)


def _bad(msg: str) -> CNIError:
    return CNIError(skel.E_INVALID_CONFIG, msg)


def underlay_link(sock: nl.Netlink, node: NodeConf) -> nl.Link:
    """The link that carries the VXLAN traffic; localIP must be one of this node's addresses."""
    holders = [idx for idx, addr, _plen in sock.addrs() if addr == node.local_ip]
    if not holders:
        raise _bad(f"localIP {node.local_ip} is not an address of this node")
    if node.underlay:
        link = sock.get_link(node.underlay)
        if link is None:
            raise _bad(f"underlayDevice {node.underlay} does not exist on this node")
        return link
    for link in sock.links():
        if link.index == holders[0]:
            return link
    raise CNIError(skel.E_IO, f"the link holding {node.local_ip} vanished")


def _desired(node: NodeConf) -> list[Entry]:
    """Per peer: the VXLAN FDB entry, the bridge FDB entry, the ARP entry and the route."""
    out: list[Entry] = []
    for p in node.peers:
        gw, mac = p.subnet.gateway, p.subnet.mac
        out.append(["fdb", node.vxlan, mac, p.ip])
        out.append(["brfdb", node.vxlan, mac])
        out.append(["neigh", node.bridge, gw, mac])
        out.append(["route", p.subnet.text, gw, node.bridge])
    return out


def _apply(sock: nl.Netlink, entry: Entry) -> None:
    """Create one peer entry; FileExistsError when it is there already."""
    kind, dev = entry[0], entry[1] if entry[0] != "route" else entry[3]
    link = sock.get_link(dev)
    if link is None:
        raise CNIError(skel.E_IO, f"{dev} vanished while the node was being set up")
    if kind == "fdb":
        sock.set_neigh(link.index, entry[2], entry[3], family=nl.AF_BRIDGE, flags=nl.NTF_SELF)
    elif kind == "brfdb":
        sock.set_neigh(link.index, entry[2], family=nl.AF_BRIDGE, state=nl.NUD_NOARP,
                       flags=nl.NTF_MASTER)
    elif kind == "neigh":
        sock.set_neigh(link.index, entry[3], entry[2])
    else:
        dst, plen = entry[1].split("/")
        sock.add_route(dst, int(plen), entry[2], link.index, onlink=True)


def ensure(sock: nl.Netlink, node: NodeConf, created: list[Entry]) -> int:
    """Bring the node side to the config; append what we made to `created`. Returns the MTU."""
    underlay = underlay_link(sock, node)
    mtu = node.mtu or underlay.mtu - VXLAN_OVERHEAD
    br = _bridge(sock, node, mtu, created)
    if (node.subnet.gateway, node.subnet.plen) not in {(a, p) for _i, a, p in sock.addrs(br.index)}:
        sock.add_addr(br.index, node.subnet.gateway, node.subnet.plen)
        created.append(["addr", node.bridge, node.subnet.gateway, node.subnet.plen])
    fwd = f"net/ipv4/conf/{node.bridge}/forwarding"
    with open("/proc/sys/" + fwd) as f:
        old = f.read().strip()
    if old != "1":
        nl.write_sysctl(fwd, "1")
        created.append(["sysctl", fwd, old])
    vx = _vxlan(sock, node, underlay, mtu, created)
    if vx.master != br.index or not vx.flags & nl.IFF_UP:
        sock.set_link(vx.index, master=br.index, up=True)
    want = _desired(node)
    for entry in want:
        try:
            _apply(sock, entry)
        except FileExistsError:
            continue  # ours from an earlier ADD (recorded then) or someone else's: left alone
        if entry not in created:  # recorded, then removed by someone: made again, recorded once
            created.append(entry)
    stale = [e for e in created if e[0] in ("fdb", "brfdb", "neigh", "route") and e not in want]
    for entry in reversed(stale):  # a peer that left the config
        _remove(sock, entry)
        created.remove(entry)
    return mtu


def _bridge(sock: nl.Netlink, node: NodeConf, mtu: int, created: list[Entry]) -> nl.Link:
    br = sock.get_link(node.bridge)
    if br is None:
        sock.add_bridge(node.bridge, mtu, node.subnet.mac)
        created.append(["link", node.bridge])
        br = sock.get_link(node.bridge)
        if br is None:
            raise CNIError(skel.E_IO, f"bridge {node.bridge} vanished after creation")
    elif br.kind != "bridge":
        raise _bad(f"{node.bridge} exists and is a {br.kind or 'physical'} link, not a bridge")
    elif br.mac != node.subnet.mac:
        raise _bad(f"bridge {node.bridge} exists with MAC {br.mac}; peers expect "
                   f"{node.subnet.mac} for subnet {node.subnet.text}")
    if not br.flags & nl.IFF_UP:
        sock.set_link(br.index, up=True)
    return br


def _vxlan(
    sock: nl.Netlink, node: NodeConf, underlay: nl.Link, mtu: int, created: list[Entry]
) -> nl.Link:
    vx = sock.get_link(node.vxlan)
    if vx is None:
        sock.add_vxlan(node.vxlan, node.vni, node.port, node.local_ip, underlay.index, mtu)
        created.append(["link", node.vxlan])
        vx = sock.get_link(node.vxlan)
        if vx is None:
            raise CNIError(skel.E_IO, f"{node.vxlan} vanished after creation")
        return vx
    have = _vxlan_id(vx)
    if vx.kind != "vxlan" or have != (node.vni, node.port):
        raise _bad(f"{node.vxlan} exists but is not a VXLAN with VNI {node.vni}, port "
                   f"{node.port} (kind {vx.kind or 'none'}, VNI/port {have})")
    return vx


def _vxlan_id(link: nl.Link) -> tuple[int, int]:
    vni = int.from_bytes(link.info.get(nl.IFLA_VXLAN_ID, b"\0" * 4), "little")
    port = int.from_bytes(link.info.get(nl.IFLA_VXLAN_PORT, b"\0\0"), "big")
    return vni, port


def teardown(sock: nl.Netlink, created: list[Entry]) -> None:
    """Undo the record in reverse; an object already gone (e.g. with its link) is fine."""
    for entry in reversed(created):
        _remove(sock, entry)
    created.clear()


def _remove(sock: nl.Netlink, entry: Entry) -> None:
    kind = entry[0]
    try:
        if kind == "sysctl":
            nl.write_sysctl(entry[1], entry[2])
            return
        link = sock.get_link(entry[3] if kind == "route" else entry[1])
        if link is None:
            return  # its link is gone, and everything on it went with it
        if kind == "link":
            sock.del_link(link.index)
        elif kind == "addr":
            sock.del_addr(link.index, entry[2], entry[3])
        elif kind == "fdb":
            sock.del_neigh(link.index, entry[2], entry[3], family=nl.AF_BRIDGE, flags=nl.NTF_SELF)
        elif kind == "brfdb":
            sock.del_neigh(link.index, entry[2], family=nl.AF_BRIDGE, flags=nl.NTF_MASTER)
        elif kind == "neigh":
            sock.del_neigh(link.index, entry[3], entry[2])
        elif kind == "route":
            dst, plen = entry[1].split("/")
            sock.del_route(dst, int(plen), entry[2], link.index)
    except FileNotFoundError:
        return  # a sysctl of a link that is gone
    except OSError as exc:
        if exc.errno not in _GONE:
            raise


def check(sock: nl.Netlink, node: NodeConf) -> None:
    """CHECK: the links, and every peer's FDB, ARP entry and route, are as configured."""
    br, vx = sock.get_link(node.bridge), sock.get_link(node.vxlan)
    if br is None or vx is None:
        raise CNIError(E_NODE_STATE, f"{node.bridge} or {node.vxlan} is missing")
    if vx.master != br.index or _vxlan_id(vx) != (node.vni, node.port):
        raise CNIError(E_NODE_STATE, f"{node.vxlan} is not VNI {node.vni} on {node.bridge}")
    if not br.flags & vx.flags & nl.IFF_UP:
        raise CNIError(E_NODE_STATE, f"{node.bridge} or {node.vxlan} is down")
    fdb = {(ip, mac) for ip, mac, _s in sock.neighs(nl.AF_BRIDGE, vx.index)}
    arp = {(ip, mac) for ip, mac, _s in sock.neighs(nl.AF_INET, br.index)}
    routes = {(f"{d}/{p}", gw, oif) for d, p, gw, oif in sock.routes()}
    for p in node.peers:
        gw, mac = p.subnet.gateway, p.subnet.mac
        if (p.ip, mac) not in fdb or ("", mac) not in fdb:
            raise CNIError(E_NODE_STATE, f"FDB entry for peer {p.ip} ({mac}) is missing")
        if (gw, mac) not in arp:
            raise CNIError(E_NODE_STATE, f"neighbour entry {gw} {mac} is missing")
        if (p.subnet.text, gw, br.index) not in routes:
            raise CNIError(E_NODE_STATE, f"route to {p.subnet.text} via {gw} is missing")
