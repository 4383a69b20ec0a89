"""Nodes for the vxlan plugin: each a netns on an underlay switch (itself a netns), pods in more.

Nothing here touches the host's netns: every link, address and route lives in namespaces this
module pins under its own directory, and the private ranges below are used nowhere else.
Used by tests/network/test_vxlan.py and bench/overlaybench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from runtime.network import netns as netns_mod

CLUSTER = "10.244.0.0/16"
UNDERLAY = "192.168.250"  # .0/24, only ever inside the switch and node namespaces
VNI = 42
PORT = 8472  # not the default, so the config key is exercised


@dataclass
class Pod:
    node: Node
    cid: str
    netns: str
    result: dict = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return str(self.result["ips"][0]["address"].split("/")[0])


@dataclass
class Node:
    index: int  # 1-based
    netns: str
    state_dir: str

    @property
    def ip(self) -> str:
        return f"{UNDERLAY}.{self.index}"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"


def pin_netns(path: str) -> str:
    open(path, "w").close()
    subprocess.run(["unshare", f"--net={path}", "true"], check=True)
    return path


def sh(netns: str, *cmd: str, timeout: float = 30, check: bool = True) -> str:
    proc = subprocess.run(["nsenter", f"--net={netns}", *cmd], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} in {netns}: rc {proc.returncode}: {proc.stderr}")
    return proc.stdout


class Cluster:
    """`n` nodes; `bin_dir` holds the vxlan plugin, `cni_path` is where delegates are found."""

    def __init__(
        self, root: str, n: int, bin_dir: str, cni_path: str, wire: bool = False
    ) -> None:
        """`wire`: two nodes joined by one veth pair instead of a switch (the bench: a software
        bridge in between would be a cost a real underlay does not put on the nodes' CPUs)."""
        if wire and n != 2:
            raise ValueError("a wire joins exactly two nodes")
        self.root = root
        self.bin_dir = bin_dir
        self.cni_path = cni_path
        self.delegates = "ours"  # or "reference": which bridge/host-local cni_path finds first
        self.sfx = os.urandom(3).hex()
        self.pods: list[Pod] = []
        self.nodes: list[Node] = []
        os.makedirs(os.path.join(root, "ns"), exist_ok=True)
        self.switch = pin_netns(os.path.join(root, "ns", f"sw{self.sfx}"))
        batch = [f"link add ul{self.sfx} type bridge", f"link set ul{self.sfx} up"]
        for i in range(1, n + 1):
            node = Node(i, pin_netns(os.path.join(root, "ns", f"node{i}-{self.sfx}")),
                        os.path.join(root, f"node{i}"))
            os.makedirs(node.state_dir, exist_ok=True)
            # IPv4 only: link-local addresses finishing DAD would make state snapshots drift;
            # forwarding off as on a fresh host (a new netns copies the host's current value)
            sh(node.netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0")
            self.nodes.append(node)
            port = f"n{i}{self.sfx}"
            batch += [f"link add {port} type veth peer name eth0 netns {node.netns}",
                      f"link set {port} master ul{self.sfx} up"]
        if wire:
            a, b = self.nodes
            batch = [f"link add eth0 netns {a.netns} type veth peer name eth0 netns {b.netns}"]
        subprocess.run(["nsenter", f"--net={self.switch}", "ip", "-batch", "-"],
                       input="\n".join(batch) + "\n", text=True, check=True)
        for node in self.nodes:
            subprocess.run(["nsenter", f"--net={node.netns}", "ip", "-batch", "-"], text=True,
                           input=f"addr add {node.ip}/24 dev eth0\nlink set eth0 up\n"
                                 "link set lo up\n", check=True)

    def conf(self, node: Node, version: str = "1.0.0", **extra: object) -> dict:
        """One node's network config, as its conflist would hold it."""
        return {
            "cniVersion": version,
            "name": f"overlay{self.sfx}",
            "type": "vxlan",
            "clusterCIDR": CLUSTER,
            "subnet": node.subnet,
            "vni": VNI,
            "port": PORT,
            "localIP": node.ip,
            "underlayDevice": "eth0",
            "dataDir": os.path.join(node.state_dir, "vxlan"),
            "ipam": {"dataDir": os.path.join(node.state_dir, "ipam")},
            "peers": [{"ip": p.ip, "subnet": p.subnet} for p in self.nodes if p is not node],
            **extra,
        }

    def cni(self, node: Node, command: str, conf: dict, cid: str = "", netns: str = "",
            ifname: str = "eth0") -> tuple[int, dict, str]:
        """Call the plugin inside the node's netns, as that node's kubelet/runtime would."""
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": self.cni_path}
        proc = subprocess.run(["nsenter", f"--net={node.netns}",
                               os.path.join(self.bin_dir, "vxlan")],
                              input=json.dumps(conf).encode(), env=env, capture_output=True,
                              timeout=60)
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, out, proc.stderr.decode()

    def add_pod(self, node: Node) -> Pod:
        cid = os.urandom(16).hex()
        pod = Pod(node, cid, pin_netns(os.path.join(self.root, "ns", f"pod-{cid[:12]}")))
        self.pods.append(pod)
        rc, out, err = self.cni(node, "ADD", self.conf(node), cid, pod.netns)
        if rc != 0:
            raise AssertionError(f"ADD on node {node.index}: {out} {err}")
        pod.result = out
        return pod

    def del_pod(self, pod: Pod) -> None:
        conf = {**self.conf(pod.node), "prevResult": pod.result}
        rc, out, err = self.cni(pod.node, "DEL", conf, pod.cid, pod.netns)
        if rc != 0:
            raise AssertionError(f"DEL on node {pod.node.index}: {out} {err}")

    def close(self) -> None:
        """Remove every namespace; links inside them go with them."""
        for pod in self.pods:
            netns_mod.remove(pod.netns)
        for node in self.nodes:
            netns_mod.remove(node.netns)
        netns_mod.remove(self.switch)


def node_state(netns: str) -> dict[str, object]:
    """What a plugin could leave behind in a netns: links, addresses, routes, static
    neighbours, FDB entries, firewall rules. Dynamic ARP entries are the kernel's, left out."""
    def js(*args: str) -> list[dict[str, Any]]:
        out = sh(netns, *args)
        return json.loads(out) if out.strip() else []

    links = sorted((x["ifname"], x.get("mtu")) for x in js("ip", "-j", "link"))
    addrs = sorted((x["ifname"], a["local"], a["prefixlen"])
                   for x in js("ip", "-j", "addr") for a in x.get("addr_info", []))
    routes = [js("ip", "-j", "-4", "route", "show", "table", "all"),
              js("ip", "-j", "-6", "route", "show", "table", "all")]
    neigh = [n for n in js("ip", "-j", "neigh") if set(n.get("state", [])) & {"PERMANENT", "NOARP"}]
    return {
        "links": links,
        "addrs": addrs,
        "routes": routes,
        "neigh": neigh,
        "fdb": js("bridge", "-j", "fdb", "show"),
        "nft": sh(netns, "nft", "list", "ruleset"),
        "iptables": [x for x in sh(netns, "iptables-save").splitlines() if not x.startswith("#")],
    }


def snmp(netns: str) -> dict[str, int]:
    """IP counters of a netns (Ip: line of /proc/net/snmp) by name."""
    lines = [ln.split() for ln in sh(netns, "cat", "/proc/net/snmp").splitlines()
             if ln.startswith("Ip:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
