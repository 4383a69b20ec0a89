"""vxlan plugin config: validated whole before anything is created, and the delegate's config.

Every node derives its peers' bridge addresses from their subnets (gateway = first address,
MAC = 0a:58 + the gateway's four bytes), so a static peer list of (underlay IP, subnet) is all
a node needs to know about the others: nothing is exchanged at run time.
"""

from __future__ import annotations

from cni_plugins import lean, skel
from cni_plugins.skel import CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORT = 4789  # IANA's VXLAN port
DEFAULT_BRIDGE = "berthvx0"
DEFAULT_DATA_DIR = "/var/lib/cni/berth-vxlan"
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


def _bad(msg: str) -> CNIError:
    return CNIError(skel.E_INVALID_CONFIG, msg)


class Subnet:
    """An IPv4 CIDR, its network value, and the node addresses derived from it."""

    def __init__(self, text: object, what: str) -> None:
        try:
            bits, value, self.plen = lean.parse_cidr(str(text))
        except ValueError as exc:
            raise _bad(f"{what}: {exc}") from None
        if bits != 32 or "/" not in str(text):
            raise _bad(f"{what} must be an IPv4 CIDR such as 10.244.1.0/24, not {text!r}")
        self.net = lean.network(bits, value, self.plen)
        if self.plen > 30:
            raise _bad(f"{what} {text} is too small for a gateway and pods")
        self.text = f"{lean.fmt_ip(32, self.net)}/{self.plen}"

    @property
    def size(self) -> int:
        return 1 << (32 - self.plen)

    def contains(self, other: Subnet) -> bool:
        return other.plen >= self.plen and self.net <= other.net < self.net + self.size

    def overlaps(self, other: Subnet) -> bool:
        return self.contains(other) or other.contains(self)

    @property
    def gateway(self) -> str:
        """The node bridge's address: the subnet's first host, host-local's default gateway."""
        return lean.fmt_ip(32, self.net + 1)

    @property
    def mac(self) -> str:
        """The node bridge's MAC, which peers compute for their neighbour and FDB entries."""
        raw = (self.net + 1).to_bytes(4, "big")
        return "0a:58:" + ":".join(f"{b:02x}" for b in raw)


class Peer:
    """Another node: its underlay (VTEP) address and its pod subnet."""

    def __init__(self, ip: str, subnet: Subnet) -> None:
        self.ip = ip
        self.subnet = subnet


def _ipv4(text: object, what: str) -> str:
    try:
        bits, value = lean.parse_ip(str(text))
    except ValueError:
        bits, value = 0, 0
    if bits != 32 or text is None:
        raise _bad(f"{what} must be an IPv4 address, not {text!r}")
    return lean.fmt_ip(32, value)


def _int(conf: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = conf.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise _bad(f"{key} must be an integer from {low} to {high}, not {raw!r}")
    return raw


def _ifname(conf: dict[str, Any], key: str, default: str) -> str:
    name = conf.get(key) or default
    if not isinstance(name, str) or not 0 < len(name) < 16 or "/" in name or " " in name:
        raise _bad(f"{key} must be an interface name of 1-15 characters, not {name!r}")
    return name


class NodeConf:
    """One node's view of the overlay, from the network config."""

    def __init__(self, conf: dict[str, Any]) -> None:
        name = conf.get("name")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise _bad("the network config needs a plain name")
        self.name = name
        self.cluster = Subnet(conf.get("clusterCIDR"), "clusterCIDR")
        self.subnet = Subnet(conf.get("subnet"), "subnet")
        if not self.cluster.contains(self.subnet):
            raise _bad(f"subnet {self.subnet.text} is not inside clusterCIDR {self.cluster.text}")
        self.vni = _int(conf, "vni", 1, 1, (1 << 24) - 1)
        self.port = _int(conf, "port", DEFAULT_PORT, 1, 65535)
        self.local_ip = _ipv4(conf.get("localIP"), "localIP")
        self.underlay = conf.get("underlayDevice") or ""
        if self.underlay:
            _ifname(conf, "underlayDevice", "")
        self.mtu = _int(conf, "mtu", 0, 0, 65535)
        if self.mtu and self.mtu < 576:
            raise _bad(f"mtu {self.mtu} is below IPv4's minimum of 576")
        self.bridge = _ifname(conf, "bridge", DEFAULT_BRIDGE)
        self.vxlan = _ifname(conf, "vxlanDevice", f"{self.bridge[:9]}.{self.vni}"[:15])
        if self.vxlan == self.bridge:
            raise _bad("vxlanDevice and bridge must differ")
        self.data_dir = str(conf.get("dataDir") or DEFAULT_DATA_DIR)
        self.peers = self._peers(conf.get("peers", []))
        for key in ("ipam", "delegate"):
            if not isinstance(conf.get(key, {}), dict):
                raise _bad(f"{key} must be a JSON object")

    def _peers(self, raw: object) -> list[Peer]:
        if not isinstance(raw, list):
            raise _bad("peers must be a list of {\"ip\", \"subnet\"} objects")
        peers: list[Peer] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise _bad(f"peers[{i}] must be an object with ip and subnet")
            peer = Peer(_ipv4(item.get("ip"), f"peers[{i}].ip"),
                        Subnet(item.get("subnet"), f"peers[{i}].subnet"))
            if peer.ip == self.local_ip:
                raise _bad(f"peers[{i}].ip {peer.ip} is this node's localIP")
            if not self.cluster.contains(peer.subnet):
                raise _bad(f"peers[{i}].subnet {peer.subnet.text} is outside clusterCIDR")
            for other in [Peer(self.local_ip, self.subnet), *peers]:
                if other.subnet.overlaps(peer.subnet):
                    raise _bad(f"peers[{i}].subnet {peer.subnet.text} overlaps "
                               f"{other.subnet.text}")
                if other.ip == peer.ip:
                    raise _bad(f"peers[{i}].ip {peer.ip} is listed twice")
            peers.append(peer)
        return peers


def delegate_conf(conf: dict[str, Any], node: NodeConf, mtu: int) -> dict[str, Any]:
    """The pod side is an ordinary bridge attachment (our bridge or the reference one) on the
    node bridge, with host-local IPAM over this node's subnet; `ipam` and `delegate` in the
    network config override any of it."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": node.subnet.text, "gateway": node.subnet.gateway}]],
        "routes": [{"dst": node.cluster.text, "gw": node.subnet.gateway}],
        **conf.get("ipam", {}),
    }
    out: dict[str, Any] = {
        "cniVersion": conf.get("cniVersion", "1.0.0"),
        "name": node.name,
        "type": "bridge",
        "bridge": node.bridge,
        "mtu": mtu,
        "isGateway": True,
        "hairpinMode": True,
        "ipam": ipam,
        **conf.get("delegate", {}),
    }
    for key in ("runtimeConfig", "args", "prevResult", "cni.dev/valid-attachments"):
        if key in conf:
            out[key] = conf[key]
    return out
