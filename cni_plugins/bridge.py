"""bridge plugin: a Linux bridge on the host, one veth per pod, IPAM delegated via CNI_PATH."""

from __future__ import annotations

import errno
import os

from cni_plugins import delegate, firewall, lean, nl, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni_plugins.skel import Handler

DEFAULT_BRIDGE = "cni0"


def _conf(args: Args) -> dict[str, Any]:
    conf = args.conf
    if not conf.get("ipam", {}).get("type"):
        raise CNIError(skel.E_INVALID_CONFIG, "bridge needs an ipam.type")
    return conf


def _ensure_bridge(sock: nl.Netlink, name: str, mtu: int, promisc: bool) -> nl.Link:
    """Create the bridge (with a MAC of its own, nl.add_bridge says why), tolerating a
    concurrent ADD that made it first."""
    link = sock.get_link(name)
    if link is None:
        try:  # noqa: SIM105 - contextlib costs 4 ms of start-up
            sock.add_bridge(name, mtu, nl.random_mac())
        except FileExistsError:
            pass  # a concurrent ADD won the race
        link = sock.get_link(name)
        if link is None:
            raise CNIError(skel.E_IO, f"bridge {name} vanished after creation")
    want_up = not link.flags & nl.IFF_UP
    want_promisc = promisc and not link.flags & nl.IFF_PROMISC
    if want_up or want_promisc:
        sock.set_link(link.index, up=True, promisc=True if promisc else None)
    return link


def _host_veth_name() -> str:
    """Random like the reference, so a half-torn-down sibling never collides with a new pod."""
    return "veth" + os.urandom(4).hex()


def cmd_add(args: Args) -> dict[str, Any]:
    conf = _conf(args)
    br_name = conf.get("bridge") or DEFAULT_BRIDGE
    mtu = int(conf.get("mtu") or 0)
    is_gw = bool(conf.get("isGateway"))
    is_default_gw = bool(conf.get("isDefaultGateway"))
    if not os.path.exists(args.netns):
        raise CNIError(skel.E_INVALID_ENV, f"netns {args.netns} does not exist")
    host = nl.Netlink()
    try:
        # checked before IPAM: a rejected second ADD must not release the live pod's lease
        with nl.in_netns(args.netns), nl.Netlink() as pod:
            if pod.get_link(args.ifname) is not None:
                raise CNIError(skel.E_INVALID_ENV, f"{args.ifname} already exists in {args.netns}")
        br = _ensure_bridge(host, br_name, mtu, bool(conf.get("promiscMode")))
        ipam = delegate.call(conf["ipam"]["type"], "ADD", args) or {}
        try:
            result = _plumb(args, conf, host, br, ipam, is_gw or is_default_gw, is_default_gw, mtu)
        except BaseException:
            _del_pod_link(args)
            delegate.call(conf["ipam"]["type"], "DEL", args)
            raise
    finally:
        host.close()
    return result


def _plumb(
    args: Args,
    conf: dict[str, Any],
    host: nl.Netlink,
    br: nl.Link,
    ipam: dict[str, Any],
    is_gw: bool,
    default_gw: bool,
    mtu: int,
) -> dict[str, Any]:
    veth = _host_veth_name()
    ips = ipam.get("ips", [])
    routes = list(ipam.get("routes", []))
    home_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pod_mac = _plumb_pod(args, veth, home_fd, ips, routes, default_gw, mtu)
    finally:
        os.close(home_fd)
    hl = host.get_link(veth)
    if hl is None:
        raise CNIError(skel.E_IO, f"host veth {veth} missing after creation")
    host.set_link(hl.index, master=br.index, up=True)
    if conf.get("hairpinMode"):
        host.set_hairpin(hl.index)
    if is_gw:
        for ip in ips:
            if ip.get("gateway"):
                plen = int(ip["address"].split("/")[1])
                host.add_addr(br.index, ip["gateway"], plen, replace_ok=True)
        nl.write_sysctl(f"net/ipv4/conf/{br.name}/forwarding", "1")
    if conf.get("ipMasq"):
        _masq_add(args, ips)
    br = host.get_link(br.name) or br
    return {
        "interfaces": [
            {"name": br.name, "mac": br.mac},
            {"name": veth, "mac": hl.mac},
            {"name": args.ifname, "mac": pod_mac, "sandbox": args.netns},
        ],
        "ips": [{**ip, "interface": 2} for ip in ips],
        "routes": routes,
        "dns": conf.get("dns") or ipam.get("dns") or {},
    }


def _plumb_pod(
    args: Args,
    veth: str,
    home_fd: int,
    ips: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    default_gw: bool,
    mtu: int,
) -> str:
    """Everything done inside the pod netns; returns the pod interface's MAC."""
    with nl.in_netns(args.netns):
        pod = nl.Netlink()
        try:
            # created from inside the pod netns, the host end is sent home by fd
            pod.add_veth(args.ifname, veth, home_fd, mtu)
            link = pod.get_link(args.ifname)
            assert link is not None
            for ip in ips:
                addr, plen = ip["address"].split("/")
                pod.add_addr(link.index, addr, int(plen))
            pod.set_link(link.index, up=True)
            if default_gw:
                gws = [ip["gateway"] for ip in ips if ":" not in ip.get("gateway", ":")]
                if gws and not any(r.get("dst") == "0.0.0.0/0" for r in routes):
                    routes.append({"dst": "0.0.0.0/0", "gw": gws[0]})
            for r in routes:
                gw = r.get("gw") or _default_gw(ips, r["dst"])
                dst, plen = r["dst"].split("/")
                try:  # noqa: SIM105
                    pod.add_route(dst, int(plen), gw, link.index)
                except FileExistsError:
                    pass  # re-ADD or a route the kernel already made
            return link.mac
        finally:
            pod.close()


def _default_gw(ips: list[dict[str, Any]], dst: str) -> str | None:
    v6 = ":" in dst
    for ip in ips:
        gw = ip.get("gateway")
        if gw and (":" in gw) == v6:
            return str(gw)
    return None


def _masq_add(args: Args, ips: list[dict[str, Any]]) -> None:
    rules = []
    for ip in ips:
        if ":" in ip["address"]:
            continue
        addr = ip["address"].split("/")[0]
        net = lean.cidr_network(ip["address"])
        rules.append(firewall.Rule("postrouting", f"ip saddr {addr} ip daddr != {net} masquerade"))
    firewall.add(rules, _masq_tag(args))


def _masq_tag(args: Args) -> str:
    return firewall.tag("bridge", str(args.conf.get("name")), f"{args.container_id}/{args.ifname}")


def cmd_del(args: Args) -> None:
    """Each step tolerates its object being gone already, so DEL is idempotent."""
    conf = _conf(args)
    delegate.call(conf["ipam"]["type"], "DEL", args)
    _del_pod_link(args)
    if conf.get("ipMasq"):
        firewall.remove(_masq_tag(args))


def _del_pod_link(args: Args) -> None:
    """Deleting the pod end removes the whole veth pair; a missing netns means it is gone."""
    if not args.netns or not os.path.exists(args.netns):
        return
    try:
        with nl.in_netns(args.netns), nl.Netlink() as pod:
            link = pod.get_link(args.ifname)
            if link is not None:
                pod.del_link(link.index)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise


def cmd_check(args: Args) -> None:
    conf = _conf(args)
    prev = skel.prev_result(args)
    if prev is None:
        raise CNIError(skel.E_INVALID_CONFIG, "CHECK needs prevResult")
    delegate.call(conf["ipam"]["type"], "CHECK", args)
    with nl.Netlink() as host:
        br = host.get_link(conf.get("bridge") or DEFAULT_BRIDGE)
        if br is None:
            raise CNIError(skel.E_UNKNOWN_CONTAINER, "bridge is missing")
    with nl.in_netns(args.netns), nl.Netlink() as pod:
        link = pod.get_link(args.ifname)
        if link is None:
            raise CNIError(skel.E_UNKNOWN_CONTAINER, f"{args.ifname} missing in {args.netns}")
        have = {f"{a}/{p}" for _i, a, p in pod.addrs(link.index)}
    for ip in prev.get("ips", []):
        if ip["address"] not in have:
            raise CNIError(skel.E_UNKNOWN_CONTAINER, f"{ip['address']} missing on {args.ifname}")


def cmd_gc(args: Args) -> None:
    """CNI 1.1 GC: IPAM drops stale leases, we drop masquerade rules of stale attachments."""
    delegate.call(_conf(args)["ipam"]["type"], "GC", args)
    valid = {
        f"{a.get('containerID')}/{a.get('ifname')}"
        for a in args.conf.get("cni.dev/valid-attachments", [])
    }
    prefix = firewall.tag("bridge", str(args.conf.get("name")), "")
    for owner in firewall.owners(prefix):
        if owner[len(prefix) :] not in valid:
            firewall.remove(owner)


def cmd_status(args: Args) -> None:
    delegate.call(_conf(args)["ipam"]["type"], "STATUS", args)


HANDLERS: dict[str, Handler] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status
}


def main() -> int:
    return skel.run(HANDLERS, "bridge")
