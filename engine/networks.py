"""User-defined networks: a record, a bridge, a CNI conflist through Berth's own plugins, a
subnet from the pool, isolation from every other bridge, and an embedded DNS listener.

Only the record is made at create (name, subnet and bridge name checked and reserved there, so
every conflict is the create's 409/400/403). The bridge, listener and conflist come with the
first container that joins (`ready`), as Podman's netavark does, and stay until `network rm`;
the record's `bridge_up` says so, written before the bridge is made, so a restart (or a removal)
knows which networks have kernel state. The isolation rules cover the networks that have a
bridge (one that does not exist forwards nothing): they are rebuilt when a bridge comes, beside
its making, and awaited before its first member joins, and when it goes, off the request path.
A network nobody joins costs two store writes and one netlink look-up, and no nft at all.

`bridge`, `host` and `none` are built in and never stored: `bridge` is Berth's default CNI
network (the one kubelet's pods use too), `host` the host's namespace, `none` loopback only.
A user network's conflist lives under the state dir (`networks/<id>.conflist`), never in the
CNI conf dir where it could become kubelet's default network; its leases live in
`networks/ipam/<cni name>/`. Containers join through `engine/endpoints.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from engine import overlay
from engine.config import Config
from engine.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from engine.netdns import EmbeddedDNS, Resolve
from engine.netspec import BRIDGE_OPT, NetworkSpec, check, is_ip, parse_net
from engine.store import NameTaken, NetworkRecord, Store
from runtime.network import bridges, isolation
from runtime.network import conf as netconf
from runtime.network.cni import CNIManager
from runtime.network.conf import NetworkList

log = structlog.get_logger("networks")
class Networks:
    """The network table plus the kernel objects and listeners each record stands for."""

    def __init__(self, config: Config, store: Store, cni: CNIManager, resolve: Resolve) -> None:
        self.config = config
        self.store = store
        self.cni = cni
        self.root = Path(config.state_dir) / "networks"
        self.ipam_dir = self.root / "ipam"
        self.table = isolation.table_name(config.state_dir)
        self.dns = EmbeddedDNS(resolve, config.docker.dns_forward)
        self.lock = asyncio.Lock()  # one create/remove at a time: the pool and the records
        self._isolating: asyncio.Task[None] | None = None
        self._isolation_stale = False
        self._isolation_error: OSError | None = None
        self._up: set[str] = set()  # networks whose bridge and listener this berthd has made

    # lookups

    def get(self, ref: str) -> NetworkRecord:
        """dockerd's order: full id, exact name, then a unique id prefix."""
        rec = self.store.networks.get(ref)
        if rec is not None:
            return rec
        for rec in self.store.networks.scan():
            if rec.name == ref:
                return self.store.networks.get(rec.id) or rec
        ids = self.store.networks.ids_with_prefix(ref) if ref else []
        if len(ids) == 1:
            return self.store.networks.get(ids[0]) or self.get(ids[0])
        if len(ids) > 1:
            raise InvalidArgument(f"network {ref[:100]} is ambiguous ({len(ids)} matches found "
                                  "based on ID prefix)")
        raise NotFound(f"network {ref[:100]} not found")

    def all(self) -> list[NetworkRecord]:
        return self.store.networks.find()

    def check_address(self, rec: NetworkRecord, ip: str, taken: list[str]) -> None:
        """dockerd's rules for a container's own address (`--ip`); `taken`: addresses of the
        containers on the network now."""
        if not rec.extra.get("user_subnet"):
            raise InvalidArgument("user specified IP address is supported only when connecting "
                                  "to networks with user configured subnets")
        # an overlay's containers take addresses from this node's subnet only
        subnet = ipaddress.IPv4Network(rec.extra["ip_range" if rec.driver == "overlay"
                                                 else "subnet"])
        addr = ipaddress.IPv4Address(ip) if is_ip(ip) else None
        if addr is None or addr not in subnet or addr in (
                subnet.network_address, subnet.broadcast_address) or ip == rec.extra["gateway"]:
            raise InvalidArgument(f"invalid IPv4 address {ip[:50]!r} for network {rec.name}: "
                                  f"not a free host address of {subnet}")
        if ip in taken:
            raise AlreadyExists(f"Address already in use: {ip} on network {rec.name}")

    def conflist_path(self, rec: NetworkRecord) -> Path:
        return self.root / f"{rec.id}.conflist"

    def conflist(self, rec: NetworkRecord, ports: bool) -> NetworkList:
        """The chain one join runs: portmap only for a container that publishes ports (its
        ADD would change nothing, and its DEL costs a firewall transaction). A DEL runs the
        chain its ADD cached, so the two always agree."""
        doc = self._conflist_doc(rec, ports)
        return netconf.parse(json.dumps(doc).encode(), str(self.conflist_path(rec)))

    def _conflist_doc(self, rec: NetworkRecord, ports: bool = True) -> dict[str, Any]:
        x = rec.extra
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
        if rec.driver == "overlay":
            vxlan = overlay.conflist_plugin(x["vxlan"], rec.id, self.root / "vxlan",
                                            self.ipam_dir)
            return {"cniVersion": "1.0.0", "name": x["cni_name"],
                    "plugins": [vxlan, portmap] if ports else [vxlan]}
        internal = bool(x.get("internal"))
        rng: dict[str, Any] = {"subnet": x["subnet"], "gateway": x["gateway"]}
        if x.get("ip_range"):
            pool = ipaddress.IPv4Network(x["ip_range"])
            rng["rangeStart"] = str(pool.network_address + (1 if pool.prefixlen < 31 else 0))
            rng["rangeEnd"] = str(pool.broadcast_address - (1 if pool.prefixlen < 31 else 0))
        ipam = {"type": "host-local", "ranges": [[rng]], "dataDir": str(self.ipam_dir),
                "routes": [] if internal else [{"dst": "0.0.0.0/0"}]}
        bridge: dict[str, Any] = {
            "type": "bridge", "bridge": x["bridge"], "isGateway": not internal,
            "ipMasq": not internal, "hairpinMode": True, "ipam": ipam,
            "capabilities": {"ips": True}}
        if x.get("mtu"):
            bridge["mtu"] = int(x["mtu"])
        return {"cniVersion": "1.0.0", "name": x["cni_name"],
                "plugins": [bridge, portmap] if ports else [bridge]}

    # create and remove

    async def create(self, spec: NetworkSpec) -> NetworkRecord:
        """Everything or nothing: a failure removes what was made before it."""
        check(spec)
        async with self.lock:
            for rec in self.store.networks.scan():
                if rec.name == spec.name:
                    raise AlreadyExists(f"network with name {spec.name} already exists")
            net_id = secrets.token_hex(32)
            bridge = overlay.bridge_name(net_id) if spec.driver == "overlay" else \
                spec.options.get(BRIDGE_OPT) or f"br-{net_id[:12]}"
            host = await bridges.survey(bridge, with_routes=not spec.subnet)
            subnet, gateway = self._subnet(spec, host.routes)
            vxlan: dict[str, Any] = {}
            if spec.driver == "overlay":  # the plugin makes (and unmakes) the bridge
                vxlan = overlay.plugin_conf(str(subnet), spec.ip_range, spec.options)
                gateway = overlay.gateway(spec.ip_range, spec.gateway)
                await overlay.check_local(vxlan)
            extra: dict[str, Any] = {
                "subnet": str(subnet), "gateway": gateway, "ip_range": spec.ip_range,
                "internal": spec.internal, "attachable": spec.attachable,
                "user_subnet": bool(spec.subnet),
                "options": spec.options, "cni_name": f"berth-net-{net_id[:12]}",
                "bridge": bridge, "mtu": spec.options.get("com.docker.network.driver.mtu", ""),
                "bridge_up": False} | ({"vxlan": vxlan} if vxlan else {})
            if any(r.extra.get("bridge") == bridge for r in self.store.networks.scan()) \
                    or bridge == self.default_bridge():
                raise AlreadyExists(f"bridge {bridge} is already in use by another network")
            if host.has_link:
                raise AlreadyExists(f"a network interface named {bridge} already exists on "
                                    "the host")
            rec = NetworkRecord(id=net_id, name=spec.name, driver=spec.driver,
                                created_ns=time.time_ns(), labels=spec.labels, extra=extra)
            try:
                self.store.networks.add(rec)
            except NameTaken:
                raise AlreadyExists(f"network with name {spec.name} already exists") from None
        return rec

    async def ready(self, rec: NetworkRecord) -> None:
        """Before a container joins: the bridge, conflist and DNS listener, made now if this
        is the network's first member since it was created, and the isolation rules."""
        if rec.id not in self._up:
            async with self.lock:
                await self._bring_up(rec.id)
        await self.settled()

    async def _bring_up(self, net_id: str) -> None:
        rec = self.store.networks.get(net_id)
        if rec is None:
            raise NotFound(f"network {net_id} not found")
        if rec.id in self._up:
            return
        adopt = _has_bridge(rec)  # made before a crash: take it back
        if not adopt:
            rec.extra["bridge_up"] = True  # before the bridge: a crash after leaves no orphan
            self.store.networks.put(rec)
            self._isolate_soon()  # beside the bridge's making; `ready` awaits it
        prefix = ipaddress.IPv4Network(rec.extra["subnet"]).prefixlen
        try:
            if rec.driver != "overlay":  # an overlay's bridge comes with its plugin's first ADD
                await bridges.create(rec.extra["bridge"], rec.extra["gateway"], prefix,
                                     adopt=adopt)
        except bridges.LinkExists as exc:
            rec.extra["bridge_up"] = False  # a host link took the name: never ours to delete
            self.store.networks.put(rec)
            self._isolate_soon()
            raise AlreadyExists(str(exc)) from None
        try:
            netconf.write_atomic(str(self.conflist_path(rec)), self._conflist_doc(rec))
            await self.dns.listen(rec.id, rec.extra["gateway"])
        except BaseException:
            await self._tear_down(rec)
            rec.extra["bridge_up"] = False
            self.store.networks.put(rec)
            self._isolate_soon()
            raise
        self._up.add(rec.id)

    def _subnet(self, spec: NetworkSpec,
                routes: list[ipaddress.IPv4Network]) -> tuple[ipaddress.IPv4Network, str]:
        taken = [ipaddress.IPv4Network(r.extra["subnet"]) for r in self.store.networks.scan()]
        default = self.default_subnet()
        if default is not None:
            taken.append(default)
        if spec.subnet:
            subnet = parse_net(spec.subnet, "subnet")
            if subnet.prefixlen > 30:
                raise InvalidArgument(f"subnet {subnet} is too small for a network")
            for other in taken:
                if subnet.overlaps(other):
                    raise PermissionDenied(f"Pool overlaps with other one on this address "
                                           f"space ({subnet} overlaps {other})")
        else:
            if spec.gateway or spec.ip_range:
                raise InvalidArgument("a gateway or IP range needs a subnet")
            subnet = self._free_subnet(taken + routes)
        gateway = spec.gateway or str(subnet.network_address + 1)
        gw = ipaddress.IPv4Address(gateway) if is_ip(gateway) else None
        if gw is None or gw not in subnet or gw in (subnet.network_address,
                                                    subnet.broadcast_address):
            raise InvalidArgument(f"invalid gateway {gateway[:50]!r}: not a host address in "
                                  f"{subnet}")
        if spec.ip_range and not parse_net(spec.ip_range, "IP range").subnet_of(subnet):
            raise InvalidArgument(f"IP range {spec.ip_range[:50]} is not inside {subnet}")
        return subnet, gateway

    def _free_subnet(self, busy: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        """The first of the pool that overlaps no network, the default one or a host route."""
        pool = ipaddress.IPv4Network(self.config.docker.network_pool)
        for candidate in pool.subnets(new_prefix=self.config.docker.network_pool_size):
            if not any(candidate.overlaps(b) for b in busy):
                return candidate
        raise ResourceExhausted(f"could not find an available, non-overlapping IPv4 address "
                                f"pool among the defaults to assign to the network (pool "
                                f"{pool} is used up)")

    async def remove(self, rec: NetworkRecord, users: list[str]) -> None:
        """`users`: names of the containers attached; any at all refuses, as dockerd does."""
        if users:
            raise PermissionDenied(f"error while removing network: network {rec.name} id "
                                   f"{rec.id} has active endpoints ({', '.join(users[:5])})")
        async with self.lock:
            rec = self.store.networks.get(rec.id) or rec  # `bridge_up` as it is now
            had_bridge = _has_bridge(rec)
            if had_bridge:
                await self._tear_down(rec)
            self.store.networks.delete(rec.id)
            self._up.discard(rec.id)
        if had_bridge:
            self._isolate_soon()

    async def _tear_down(self, rec: NetworkRecord) -> None:
        """Listener, bridge (an overlay's: what its plugin made), conflist, lease dir; each
        tolerates being gone already."""
        await self.dns.close(rec.id)
        try:
            if rec.driver == "overlay":
                await overlay.sweep(self.root / "vxlan", rec.extra["cni_name"])
            else:
                await bridges.delete(rec.extra["bridge"])
        except (bridges.BridgeError, OSError) as exc:
            log.warning("bridge removal failed", bridge=rec.extra["bridge"], error=str(exc))
        self.conflist_path(rec).unlink(missing_ok=True)
        lease_dir = self.ipam_dir / rec.extra["cni_name"]
        await asyncio.to_thread(shutil.rmtree, lease_dir, True)

    # isolation: rebuilt off the request path, always before a container joins a network

    def _isolate_soon(self) -> None:
        """Schedule a rebuild of the nft table from the store; rebuilds requested meanwhile
        coalesce into one more. Only a bridge's coming or going changes the rules, and no
        request but a join waits for them: `settled` is what a joining container waits on."""
        self._isolation_stale = True
        if self._isolating is None or self._isolating.done():
            self._isolating = asyncio.ensure_future(self._isolation_loop())

    async def _isolation_loop(self) -> None:
        while self._isolation_stale:
            self._isolation_stale = False
            try:
                await self._isolate()
                self._isolation_error = None
            except OSError as exc:
                self._isolation_error = exc
                log.warning("network isolation rebuild failed", error=str(exc))

    async def settled(self) -> None:
        """The nft table says what the store says; a failed rebuild is tried once more here
        and its error raised (the join fails rather than run unisolated)."""
        while self._isolating is not None and not self._isolating.done():
            await asyncio.shield(self._isolating)
        if self._isolation_error is not None:
            await self._isolate()
            self._isolation_error = None

    async def _isolate(self) -> None:
        nets = [isolation.IsolatedBridge(r.extra["bridge"], bool(r.extra.get("internal")))
                for r in self.store.networks.scan() if _has_bridge(r)]
        default = self.default_bridge()
        await isolation.apply(self.table, nets, [default] if default else [])

    # the default network, as the CNI conf dir has it

    def _default(self) -> NetworkList | None:
        try:
            return self.cni.load()
        except (netconf.ConfigError, OSError):
            return None

    def default_bridge(self) -> str:
        net = self._default()
        return str(net.plugins[0].get("bridge") or "") if net and net.plugins else ""

    def default_subnet(self) -> ipaddress.IPv4Network | None:
        net = self._default()
        for plugin in net.plugins if net else []:
            for rset in (plugin.get("ipam") or {}).get("ranges") or []:
                for rng in rset:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        return ipaddress.IPv4Network(rng["subnet"], strict=False)
        return None

    # daemon start and stop

    async def start(self) -> None:
        """After a berthd restart (or a reboot): bridges, isolation and DNS for every network
        that had them; one that never had a member stays a record. One network that cannot come
        back is logged, not fatal (its next joiner tries again)."""
        self.root.mkdir(parents=True, exist_ok=True)
        async with self.lock:
            for rec in self.store.networks.scan():
                if not _has_bridge(rec):
                    continue
                try:
                    await self._bring_up(rec.id)
                except (OSError, bridges.BridgeError) as exc:
                    log.warning("network could not be restored", network=rec.name,
                                error=str(exc))
        self._isolate_soon()

    async def stop(self) -> None:
        """Listeners go; bridges, rules and leases stay for the containers that keep running
        (the table is brought up to date first)."""
        with contextlib.suppress(OSError):
            await self.settled()
        await self.dns.close_all()


def _has_bridge(rec: NetworkRecord) -> bool:
    """Whether the network may have kernel state; records from before lazy bridges (no key)
    made theirs at create."""
    return bool(rec.extra.get("bridge_up", True))
