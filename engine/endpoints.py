"""A pod's places on networks, and the names the embedded DNS answers from them.

Each attachment is one CNI ADD on the pod's pinned netns as `eth<N>` (eth0 first, the one that
carries the published ports), recorded in the pod's `extra["networks"]` with its address, MAC,
aliases and endpoint id, so inspect can show it and a teardown (after a berthd restart too)
knows every interface to DEL. The CNI result cache keeps the conflist each ADD used, so a DEL
works even once the network's own conflist is gone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.statecache import StateCache
from engine.store import DOCKER, ContainerRecord, PodRecord, Store
from runtime.network.conf import NetworkList

if TYPE_CHECKING:
    from engine.context import Context


@dataclass
class Join:
    """Where to attach: a user network's conflist, or None for the default network."""

    network: str  # network id
    conflist: NetworkList | None = None
    aliases: list[str] = field(default_factory=list)
    ip: str = ""  # an address asked for (docker --ip); host-local picks one otherwise


def attachments(pod: PodRecord) -> list[dict[str, Any]]:
    return list(pod.extra.get("networks") or [])


def ifnames(pod: PodRecord) -> list[str]:
    """Every interface a teardown must DEL (eth0 for pods made before attachments were kept)."""
    return [a["ifname"] for a in attachments(pod)] or ["eth0"]


def next_ifname(pod: PodRecord) -> str:
    used = {a["ifname"] for a in attachments(pod)}
    n = 0
    while f"eth{n}" in used:
        n += 1
    return f"eth{n}"


async def attach(ctx: Context, pod: PodRecord, netns: str, join: Join,
                 ifname: str) -> tuple[dict[str, Any], list[str]]:
    """CNI ADD; returns the attachment record and every IP the interface got."""
    req = ctx.network_request(pod, netns, ifname)
    req.ips = [join.ip] if join.ip else []
    result = await ctx.network.setup(req, join.conflist)
    first = next((ip for ip in result.raw.get("ips", []) if ":" not in ip["address"]), None)
    ip, _, plen = (first["address"] if first else "").partition("/")
    mac = next((i.get("mac", "") for i in result.interfaces if i.get("sandbox")), "")
    att = {"network": join.network, "ifname": ifname, "aliases": list(join.aliases),
           "ip": ip, "prefixlen": int(plen or 0),
           "gateway": (first or {}).get("gateway", ""), "mac": mac,
           "endpoint": secrets.token_hex(32)}
    return att, list(result.ips)


async def detach(ctx: Context, pod: PodRecord, netns: str, ifname: str) -> None:
    await ctx.network.teardown(ctx.network_request(pod, netns, ifname))


class NameIndex:
    """Container names, short ids and aliases per network, rebuilt when the store moves.

    Docker's rules: a name resolves on a network to the running containers attached to it;
    a client asking sees the names of every network it is on (of the network it asked through
    when its address is not known).
    """

    def __init__(self, store: Store, states: StateCache) -> None:
        self.store = store
        self.states = states
        self._built: tuple[int, int] = (-1, -1)
        self._names: dict[str, dict[str, list[tuple[str, str]]]] = {}  # net -> name -> (cid, ip)
        self._client_nets: dict[str, set[str]] = {}  # ip -> networks

    def _build(self) -> None:
        gen = (self.store.pods.generation, self.store.containers.generation)
        if gen == self._built:
            return
        names: dict[str, dict[str, list[tuple[str, str]]]] = {}
        clients: dict[str, set[str]] = {}
        for c in self.store.containers.owned(DOCKER):
            pod = self.store.pods.get(c.pod_id)
            atts = [a for a in (attachments(pod) if pod else []) if a.get("ip")]
            mine = {a["network"] for a in atts}
            for att in atts:
                net = names.setdefault(att["network"], {})
                for n in {c.name, c.id[:12], *att.get("aliases", ())}:
                    net.setdefault(n.lower(), []).append((c.id, att["ip"]))
                # whichever address it asks from, a container sees all of its networks
                clients.setdefault(att["ip"], set()).update(mine)
        self._names, self._client_nets, self._built = names, clients, gen

    def resolve(self, net_id: str, client: str, name: str) -> list[str] | None:
        self._build()
        nets = self._client_nets.get(client) or {net_id}
        found: list[str] = []
        owned = False
        for net in sorted(nets):
            for cid, ip in self._names.get(net, {}).get(name, ()):
                owned = True
                st = self.states.states.get(cid)
                if st is not None and st.status == "running" and ip not in found:
                    found.append(ip)
        return found if owned else None


def members(store: Store, net_id: str) -> list[tuple[ContainerRecord, dict[str, Any]]]:
    """The Docker containers attached to a network, with their attachment."""
    out = []
    for c in store.containers.owned(DOCKER):
        pod = store.pods.get(c.pod_id)
        for att in attachments(pod) if pod else []:
            if att["network"] == net_id:
                out.append((c, att))
    return out


async def connect(ctx: Context, pod: PodRecord, join: Join) -> dict[str, Any]:
    """Join one more network as the next free eth<N>, recorded before it is returned."""
    netns = (pod.extra.get("ns") or {}).get("network", "")
    att, ips = await attach(ctx, pod, netns, join, next_ifname(pod))
    pod.extra["networks"] = [*attachments(pod), att]
    pod.extra["ips"] = [*pod.extra.get("ips", []), *ips]
    ctx.store.pods.put(pod)
    return att


async def disconnect(ctx: Context, pod: PodRecord, att: dict[str, Any]) -> None:
    netns = (pod.extra.get("ns") or {}).get("network", "")
    await detach(ctx, pod, netns, att["ifname"])
    pod.extra["networks"] = [a for a in attachments(pod) if a["ifname"] != att["ifname"]]
    pod.extra["ips"] = [ip for ip in pod.extra.get("ips", []) if ip != att["ip"]]
    ctx.store.pods.put(pod)
