"""portmap plugin: hostPort DNAT (incl. from 127.0.0.1 and hairpin), rules tagged per container."""

from __future__ import annotations

from cni_plugins import firewall, nl, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _mappings(args: Args) -> list[dict[str, Any]]:
    rc = args.conf.get("runtimeConfig") or {}
    return [m for m in rc.get("portMappings") or [] if m.get("hostPort") and m.get("containerPort")]


def _pod_ipv4(prev: dict[str, Any]) -> list[str]:
    """Pod addresses are the IPs bound to a sandbox interface (or any, if none say so)."""
    ifaces = prev.get("interfaces") or []
    out = []
    for ip in prev.get("ips", []):
        idx = ip.get("interface")
        if idx is not None and idx < len(ifaces) and not ifaces[idx].get("sandbox"):
            continue
        addr = ip["address"].split("/")[0]
        if ":" not in addr and not addr.startswith("127."):
            out.append(addr)
    return out


def _host_ifaces(prev: dict[str, Any]) -> list[str]:
    return [i["name"] for i in prev.get("interfaces") or [] if not i.get("sandbox")]


def rules_for(pod_ip: str, mappings: list[dict[str, Any]]) -> list[firewall.Rule]:
    rules = []
    for m in mappings:
        proto = str(m.get("protocol") or "tcp").lower()
        if proto not in ("tcp", "udp"):
            raise CNIError(skel.E_INVALID_CONFIG, f"unsupported protocol {proto}")
        hp, cp = int(m["hostPort"]), int(m["containerPort"])
        host_ip = m.get("hostIP") or ""
        if ":" in host_ip:
            continue
        specific = host_ip and host_ip != "0.0.0.0"
        match = f"ip daddr {host_ip} " if specific else "fib daddr type local "
        dnat = f"{match}{proto} dport {hp} dnat to {pod_ip}:{cp}"
        rules.append(firewall.Rule("prerouting", dnat))
        rules.append(firewall.Rule("output", dnat))
        # 127.0.0.1 on the host and the pod itself (hairpin) must be SNATed to come back
        for src in ("127.0.0.0/8", pod_ip):
            rules.append(
                firewall.Rule(
                    "postrouting", f"ip saddr {src} ip daddr {pod_ip} {proto} dport {cp} masquerade"
                )
            )
    return rules


def _tag(args: Args) -> str:
    return firewall.tag("portmap", str(args.conf.get("name")), args.container_id)


def cmd_add(args: Args) -> dict[str, Any]:
    prev = skel.prev_result(args)
    if prev is None:
        raise CNIError(skel.E_INVALID_CONFIG, "portmap must be chained after an interface plugin")
    mappings = _mappings(args)
    if not mappings:
        return prev
    rules = [r for ip in _pod_ipv4(prev) for r in rules_for(ip, mappings)]
    for name in _host_ifaces(prev):
        try:
            nl.write_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
        except OSError:
            continue  # the veth end is not the routing interface; the bridge is
    firewall.add(rules, _tag(args))
    return prev


def cmd_del(args: Args) -> None:
    firewall.remove(_tag(args))


def cmd_check(args: Args) -> None:
    if _mappings(args) and not firewall.list_owned(_tag(args)):
        raise CNIError(skel.E_UNKNOWN_CONTAINER, "no hostport rules for container")


def cmd_gc(args: Args) -> None:
    """Drop rules of containers no longer in cni.dev/valid-attachments (CNI 1.1 GC)."""
    valid = {a.get("containerID") for a in args.conf.get("cni.dev/valid-attachments", [])}
    prefix = firewall.tag("portmap", str(args.conf.get("name")), "")
    for owner in firewall.owners(prefix):
        if owner[len(prefix) :] not in valid:
            firewall.remove(owner)


def main() -> int:
    return skel.run({"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc}, "portmap")
