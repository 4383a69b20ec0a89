"""The `overlay` driver of the Docker API: a user network whose conflist runs the vxlan plugin.

dockerd's overlay needs swarm, whose control plane tells every node about the others. Berth has
none, so the user says it, as a vxlan plugin config does: `--subnet` is the cluster CIDR,
`--ip-range` this node's subnet of it (its containers' addresses; the gateway is its first
address), and driver options give the VNI (dockerd's own `vxlanid_list` key), this node's
underlay address and the other nodes:

    docker network create -d overlay --subnet 10.244.0.0/16 --ip-range 10.244.1.0/24 \
      -o com.docker.network.driver.overlay.vxlanid_list=42 -o vxlan.local=192.0.2.10 \
      -o vxlan.peers=192.0.2.11/10.244.2.0/24,192.0.2.12/10.244.3.0/24 NAME

The whole config is validated here with the plugin's own rules (`cni_plugins.vxlan_conf`) and
`vxlan.local` must be an address of this host, so a bad one is a 400 with nothing created.
Berth makes no link for the network: the plugin builds the node side at the first container's
ADD and removes it at the last one's DEL; `remove` sweeps whatever a failed DEL left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

from cni_plugins import nl, vxlan_node
from cni_plugins.skel import CNIError
from cni_plugins.vxlan_conf import NodeConf
from engine.errors import InvalidArgument

VNI_OPT = "com.docker.network.driver.overlay.vxlanid_list"
LOCAL_OPT = "vxlan.local"
PEERS_OPT = "vxlan.peers"
PORT_OPT = "vxlan.port"
UNDERLAY_OPT = "vxlan.underlay"
MTU_OPT = "com.docker.network.driver.mtu"
KNOWN_OPTS = (VNI_OPT, LOCAL_OPT, PEERS_OPT, PORT_OPT, UNDERLAY_OPT, MTU_OPT)


def _int_opt(options: dict[str, str], key: str) -> int | None:
    raw = options.get(key)
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidArgument(f"{key}={raw[:30]!r} is not a number (an overlay network takes "
                              "one VNI, one port, one MTU)")
    return int(raw)


def _peers(text: str) -> list[dict[str, str]]:
    """`IP/CIDR,IP/CIDR`: each node's underlay address and its subnet."""
    peers = []
    for item in text.split(","):
        ip, slash, subnet = item.strip().partition("/")
        if not slash or not ip or not subnet:
            raise InvalidArgument(f"{PEERS_OPT}: {item[:60]!r} is not <underlay IP>/<node "
                                  "subnet>, e.g. 192.0.2.11/10.244.2.0/24")
        peers.append({"ip": ip, "subnet": subnet})
    return peers


def plugin_conf(subnet: str, ip_range: str, options: dict[str, str]) -> dict[str, Any]:
    """The vxlan plugin's own keys for a network create (the conflist adds names and dirs);
    InvalidArgument says what is wrong."""
    for key in options:
        if key not in KNOWN_OPTS:
            raise InvalidArgument(f"invalid driver option {key[:100]!r} for the overlay driver "
                                  f"(known: {', '.join(KNOWN_OPTS)})")
    if not subnet or not ip_range:
        raise InvalidArgument("an overlay network needs --subnet (the cluster CIDR, the same "
                              "on every node) and --ip-range (this node's subnet of it)")
    missing = [k for k in (VNI_OPT, LOCAL_OPT, PEERS_OPT) if not options.get(k)]
    if missing:
        raise InvalidArgument(f"an overlay network needs the driver options {', '.join(missing)}"
                              " (-o key=value; see docs/overlay.md)")
    conf: dict[str, Any] = {
        "clusterCIDR": subnet, "subnet": ip_range,
        "vni": _int_opt(options, VNI_OPT), "localIP": options[LOCAL_OPT],
        "peers": _peers(options[PEERS_OPT])}
    for key, opt in (("port", PORT_OPT), ("mtu", MTU_OPT)):
        value = _int_opt(options, opt)
        if value is not None:
            conf[key] = value
    if options.get(UNDERLAY_OPT):
        conf["underlayDevice"] = options[UNDERLAY_OPT]
    try:
        NodeConf({**conf, "name": "overlay"})
    except CNIError as exc:
        raise InvalidArgument(f"overlay: {_in_docker_terms(exc.msg)}") from None
    return conf


def _in_docker_terms(msg: str) -> str:
    """The plugin's key names as the user typed them."""
    for plugin_key, docker_key in (("clusterCIDR", "subnet (cluster CIDR)"),
                                   ("subnet", "ip-range (node subnet)"), ("vni", VNI_OPT),
                                   ("localIP", LOCAL_OPT), ("peers", PEERS_OPT),
                                   ("port", PORT_OPT), ("underlayDevice", UNDERLAY_OPT)):
        if msg.startswith(plugin_key):
            return docker_key + msg[len(plugin_key):]
    return msg


def gateway(ip_range: str, wanted: str) -> str:
    """The node subnet's first address: the node bridge's, which peers route to."""
    gw = str(ipaddress.IPv4Network(ip_range, strict=False).network_address + 1)
    if wanted and wanted != gw:
        raise InvalidArgument(f"an overlay network's gateway is the first address of its "
                              f"--ip-range ({gw}), not {wanted[:50]}")
    return gw


def _check_local(conf: dict[str, Any]) -> None:
    with nl.Netlink() as sock:
        vxlan_node.underlay_link(sock, NodeConf({**conf, "name": "overlay"}))


async def check_local(conf: dict[str, Any]) -> None:
    """`vxlan.local` (and `vxlan.underlay`) must be this host's, or no container could join."""
    try:
        await asyncio.to_thread(_check_local, conf)
    except CNIError as exc:
        raise InvalidArgument(f"overlay: {_in_docker_terms(exc.msg)}") from None


def conflist_plugin(conf: dict[str, Any], net_id: str, data_dir: Path,
                    ipam_dir: Path) -> dict[str, Any]:
    """The conflist's first plugin: vxlan with Berth's names for the links and state dirs."""
    return {"type": "vxlan", **conf,
            "bridge": bridge_name(net_id), "vxlanDevice": f"vx-{net_id[:12]}",
            "dataDir": str(data_dir), "ipam": {"dataDir": str(ipam_dir)},
            "capabilities": {"ips": True}}


def bridge_name(net_id: str) -> str:
    return f"ov-{net_id[:12]}"


def _sweep(data_dir: Path, cni_name: str) -> None:
    """What the plugin's last DEL would have removed, had it run: its node record, undone."""
    record = data_dir / cni_name / "node.json"
    if record.exists():
        created = json.loads(record.read_text()).get("created", [])
        with nl.Netlink() as sock:
            vxlan_node.teardown(sock, created)
    shutil.rmtree(data_dir / cni_name, ignore_errors=True)


async def sweep(data_dir: Path, cni_name: str) -> None:
    await asyncio.to_thread(_sweep, data_dir, cni_name)
