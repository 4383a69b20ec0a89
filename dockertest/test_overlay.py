"""`docker network create -d overlay` (issue 16): Berth's vxlan CNI plugin behind the overlay
driver, with the other nodes named in driver options (docs/overlay.md).

Where dockerd differs: its overlay driver needs swarm (the control plane tells each node about
the others), and the suite's dockerd is no swarm member, so it refuses every overlay create
with a 500 "This node is not a swarm manager". These tests check exactly that on dockerd; on
Berth they build the network.

The other node is a network namespace this test makes, joined to the host by one veth pair
(the underlay), running the vxlan plugin from berthd's CNI bin dir directly, as its own
runtime would; berthd's node is the host's netns. Every address is a private range with no
route on the host when the test picks it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from dockertest.harness import Daemon, wait_for
from runtime.network import netns as netns_mod

VNI_OPT = "com.docker.network.driver.overlay.vxlanid_list"
HTTPD = "mkdir -p /www && echo served-on-{net} > /www/index.html && exec httpd -f -p 8080 -h /www"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _ip(*args: str, netns: str = "") -> str:
    cmd = (["nsenter", f"--net={netns}"] if netns else []) + ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _free(pattern: str, choices: range) -> int:
    routes = _ip("-4", "route") + _ip("-4", "addr")
    for n in random.sample(choices, len(choices)):
        if pattern.format(n) not in routes:
            return n
    raise RuntimeError(f"no free {pattern}")


def _pin(path: str) -> str:
    open(path, "w").close()
    subprocess.run(["unshare", f"--net={path}", "true"], check=True)
    return path


@dataclass
class Peer:
    """The other node: its netns, underlay address and subnet, one pod with an HTTP server."""

    root: Path
    cni_bin: str
    sfx: str
    underlay: str  # a.b.c, the /24 between host (.1) and peer (.2)
    cluster: str  # 10.N, the /16
    vni: int
    pod_netns: str = ""
    pod_ip: str = ""
    httpd: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        return str(self.root / f"node-{self.sfx}")

    @property
    def host_link(self) -> str:
        return f"t16o{self.sfx}"

    def conf(self) -> dict[str, object]:
        return {"cniVersion": "1.0.0", "name": f"ovpeer{self.sfx}", "type": "vxlan",
                "clusterCIDR": f"{self.cluster}.0.0/16", "subnet": f"{self.cluster}.2.0/24",
                "vni": self.vni, "localIP": f"{self.underlay}.2",
                "peers": [{"ip": f"{self.underlay}.1", "subnet": f"{self.cluster}.1.0/24"}],
                "dataDir": str(self.root / "vxlan"), "ipam": {"dataDir": str(self.root / "ipam")}}

    def cni(self, command: str) -> dict[str, object]:
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": "peerpod",
               "CNI_NETNS": self.pod_netns, "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_bin}
        proc = subprocess.run(["nsenter", f"--net={self.netns}",
                               os.path.join(self.cni_bin, "vxlan")], env=env, timeout=60,
                              input=json.dumps(self.conf()).encode(), capture_output=True)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def start(self) -> None:
        _pin(self.netns)
        subprocess.run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name",
                        "eth0", "netns", self.netns], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.underlay}.1/24", "dev", self.host_link],
                       check=True)
        subprocess.run(["ip", "link", "set", self.host_link, "up"], check=True)
        subprocess.run(["nsenter", f"--net={self.netns}", "ip", "-batch", "-"], text=True,
                       input=f"addr add {self.underlay}.2/24 dev eth0\nlink set eth0 up\n"
                             "link set lo up\n", check=True)
        self.pod_netns = _pin(str(self.root / f"pod-{self.sfx}"))
        result = self.cni("ADD")
        self.pod_ip = str(result["ips"][0]["address"]).split("/")[0]  # type: ignore[index]
        www = self.root / "www"
        www.mkdir()
        (www / "index.html").write_text("served-on-peer\n")
        self.httpd = subprocess.Popen(["nsenter", f"--net={self.pod_netns}", "busybox", "httpd",
                                       "-f", "-p", "8080", "-h", str(www)])
        wait_for(lambda: ":8080 " in subprocess.run(
            ["nsenter", f"--net={self.pod_netns}", "ss", "-Hltn"], capture_output=True,
            text=True).stdout, 20, "httpd in the peer pod")

    def fetch(self, ip: str) -> str:
        proc = subprocess.run(["nsenter", f"--net={self.pod_netns}", "busybox", "nc", "-w", "10",
                               ip, "8080"], input=b"GET / HTTP/1.0\r\n\r\n",
                              capture_output=True, timeout=60)
        return proc.stdout.partition(b"\r\n\r\n")[2].decode()

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.kill()
            self.httpd.wait()
        if self.pod_netns:
            with suppress(AssertionError):
                self.cni("DEL")
            netns_mod.remove(self.pod_netns)
        if os.path.exists(self.netns):
            netns_mod.remove(self.netns)  # the veth pair goes with its peer end


@pytest.fixture
def peer(request: pytest.FixtureRequest, dk: Daemon, tmp_path: Path) -> Iterator[Peer]:
    if dk.name != "berth":
        pytest.skip("dockerd refuses overlay without swarm (test_overlay_needs_swarm_on_dockerd)")
    berthd = request.getfixturevalue("berthd")
    p = Peer(tmp_path, str(berthd.workdir / "cni-bin"), secrets.token_hex(3),
             f"192.168.{_free('192.168.{}.', range(100, 200))}",
             f"10.{_free('10.{}.', range(200, 250))}", random.randrange(1000, 1 << 24))
    try:
        p.start()
        yield p
    finally:
        p.close()


def _create(dk: Daemon, name: str, p: Peer, iprange: str | None = None, **options: str) -> str:
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
        subnet=f"{p.cluster}.0.0/16",
        iprange=f"{p.cluster}.1.0/24" if iprange is None else iprange or None)])
    opts = {VNI_OPT: str(p.vni), "vxlan.local": f"{p.underlay}.1",
            "vxlan.peers": f"{p.underlay}.2/{p.cluster}.2.0/24", **options}
    return str(dk.api.create_network(name, driver="overlay", ipam=ipam, options=opts,
                                     attachable=True)["Id"])


def _overlay_links() -> set[str]:
    """The host's overlay bridges and VXLAN devices (Berth names them ov-/vx-<network id>)."""
    return {ln.split(":")[1].strip() for ln in _ip("-o", "link").splitlines()
            if ln.split(":")[1].strip().startswith(("ov-", "vx-"))}


def _host_state(cluster: str, net_id: str) -> list[str]:
    """What of this network the host's netns still holds: links, routes, neighbours, FDB."""
    left = [ln for ln in _ip("-o", "link").splitlines() if net_id[:12] in ln]
    left += [ln for ln in _ip("-4", "route").splitlines() if ln.startswith(f"{cluster}.")]
    left += [ln for ln in _ip("neigh").splitlines() if ln.startswith(f"{cluster}.")]
    fdb = subprocess.run(["bridge", "fdb", "show"], capture_output=True, text=True).stdout
    return left + [ln for ln in fdb.splitlines() if net_id[:12] in ln]


def test_overlay_container_reaches_a_pod_on_another_node(
        dk: Daemon, peer: Peer, request: pytest.FixtureRequest) -> None:
    """Ping and HTTP both ways between a `--network` container and the peer node's pod, DNS
    over the overlay's gateway, and nothing of the network left on the host after `rm`."""
    name = _name("dt-overlay")
    net_id = _create(dk, name, peer)
    try:
        info = dk.api.inspect_network(name)
        assert info["Driver"] == "overlay" and info["Attachable"] is True
        assert info["IPAM"]["Config"] == [{"Subnet": f"{peer.cluster}.0.0/16",
                                           "IPRange": f"{peer.cluster}.1.0/24",
                                           "Gateway": f"{peer.cluster}.1.1"}]
        assert info["Options"][VNI_OPT] == str(peer.vni)
        srv = _name("dt-ovsrv")
        res = dk.cli("run", "-d", "--network", name, "--ip", f"{peer.cluster}.2.77", dk.busybox,
                     "true", check=False)  # an address of the peer's subnet
        assert res.returncode != 0 and "not a free host address of" in res.stderr, res
        cid = dk.cli("run", "-d", "--name", srv, "--network", name, "--ip",
                     f"{peer.cluster}.1.77", dk.busybox, "sh", "-c",
                     HTTPD.format(net=name)).stdout.strip()
        wait_for(lambda: dk.api.inspect_container(cid)["State"]["Running"], 30, "server")
        ip = dk.api.inspect_container(cid)["NetworkSettings"]["Networks"][name]["IPAddress"]
        assert ip == f"{peer.cluster}.1.77"
        mtu = dk.cli("exec", cid, "cat", "/sys/class/net/eth0/mtu").stdout.strip()
        assert mtu == "1450"  # the host's veth 1500 minus the VXLAN encapsulation
        script = (f"ping -c1 -W5 {peer.pod_ip} >/dev/null && echo ping-ok; "
                  f"wget -qO- http://{peer.pod_ip}:8080/; wget -qO- http://{srv}:8080/")
        res = dk.cli("run", "--rm", "--network", name, dk.busybox, "sh", "-c", script,
                     check=False)
        assert res.stdout.split() == ["ping-ok", "served-on-peer", f"served-on-{name}"], res
        wait_for(lambda: peer.fetch(ip).strip() == f"served-on-{name}", 20,
                 "the peer's pod fetching from the container")
        dk.api.remove_container(cid, force=True)
    finally:
        for c in dk.container_ids():
            with suppress(docker.errors.NotFound):
                dk.api.remove_container(c, force=True)
        dk.api.remove_network(net_id)
    assert _host_state(peer.cluster, net_id) == []
    state = Path(request.getfixturevalue("berthd").config["state_dir"]) / "networks"
    assert not (state / "ipam" / f"berth-net-{net_id[:12]}").exists()
    assert not (state / "vxlan" / f"berth-net-{net_id[:12]}").exists()
    assert not (state / f"{net_id}.conflist").exists()
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    wait_for(lambda: net_id[:12] not in subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True).stdout, 10,
        f"no nft rule of the network left: {nft}")


def test_overlay_bad_input_creates_nothing(dk: Daemon, peer: Peer) -> None:
    """400 with the reason, and neither a network nor a link made."""
    before = {n["Id"] for n in dk.api.networks()}
    links = _overlay_links()
    cases: list[tuple[str, str | None, dict[str, str]]] = [
        ("--ip-range", "", {}),
        ("not inside", "10.9.1.0/24", {}),
        ("vxlan.peers", None, {"vxlan.peers": "192.0.2.9"}),
        ("outside", None, {"vxlan.peers": f"{peer.underlay}.2/10.9.2.0/24"}),
        ("overlaps", None, {"vxlan.peers": f"{peer.underlay}.2/{peer.cluster}.1.128/25"}),
        (VNI_OPT, None, {VNI_OPT: str(1 << 24)}),
        ("not an address of this node", None, {"vxlan.local": "192.0.2.250"}),
        ("invalid driver option", None, {"vxlan.bogus": "1"}),
    ]
    for words, iprange, options in cases:
        with pytest.raises(docker.errors.APIError) as exc:
            _create(dk, _name("dt-ovbad"), peer, iprange, **options)
        assert exc.value.status_code == 400 and words in str(exc.value.explanation), exc.value
    assert {n["Id"] for n in dk.api.networks()} == before
    assert _overlay_links() == links


def test_overlay_needs_swarm_on_dockerd(dk: Daemon) -> None:
    """dockerd without swarm: 500 'not a swarm manager'. Berth: the same create with no peer
    options is a 400 naming the options it needs."""
    with pytest.raises(docker.errors.APIError) as exc:
        dk.api.create_network(_name("dt-ovswarm"), driver="overlay", attachable=True)
    if dk.name == "dockerd":
        assert exc.value.status_code == 500, exc.value
        assert "not a swarm manager" in str(exc.value.explanation), exc.value
    else:
        assert exc.value.status_code == 400 and "--subnet" in str(exc.value.explanation)
