"""Each plugin driven per the CNI spec (env + stdin), checked against kernel state and schema."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_plugins import firewall
from tests.network.conftest import new_cid
from tests.network.helpers import bridge_conf, cni, ip_json, links_on, ok, tagged_rules

pytestmark = pytest.mark.timeout(120)
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def check_result_schema(res: dict, version: str = "1.0.0") -> None:
    """The 1.0.0 result schema: interfaces, ips referencing them, routes, dns."""
    assert res["cniVersion"] == version
    ifaces = res["interfaces"]
    for iface in ifaces:
        assert isinstance(iface["name"], str) and iface["name"]
        assert MAC.match(iface["mac"]), iface
    for ip in res["ips"]:
        assert "/" in ip["address"]
        assert 0 <= ip["interface"] < len(ifaces)
        assert ifaces[ip["interface"]].get("sandbox")
    for r in res.get("routes", []):
        assert "/" in r["dst"]
    assert isinstance(res.get("dns", {}), dict)


@pytest.mark.parametrize("kind", ["bridge", "host-local", "loopback", "portmap"])
def test_version_and_errors(our_bin, kind):
    res = ok(cni(our_bin, kind, "VERSION", {"cniVersion": "1.0.0"}))
    assert "1.0.0" in res["supportedVersions"]
    bad = cni(our_bin, kind, "BOGUS", {"cniVersion": "1.0.0"})
    assert bad.rc != 0 and bad.out["code"] == 4 and bad.out["msg"]
    old = cni(our_bin, kind, "ADD", {"cniVersion": "0.1.0", "name": "x"}, "c", "/nonexistent")
    assert old.rc != 0 and old.out["code"] == 1


def test_undecodable_config(our_bin):
    import subprocess

    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": our_bin,
    }
    proc = subprocess.run([f"{our_bin}/bridge"], input=b"{nope", env=env, capture_output=True)
    import json

    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] == 6


def test_bridge_add_check_del(our_bin, make_netns, net):
    ns, cid = make_netns(), new_cid(net)
    conf = bridge_conf(
        net["name"], net["bridge"], net["subnet"], net["data_dir"], mtu=1400, promiscMode=True
    )
    res = ok(cni(our_bin, "bridge", "ADD", conf, cid, ns))
    check_result_schema(res)
    br, veth, pod = res["interfaces"]
    assert br["name"] == net["bridge"] and pod == {**pod, "name": "eth0", "sandbox": ns}
    addr = res["ips"][0]["address"]
    gw = res["ips"][0]["gateway"]
    prefix = net["subnet"].rsplit(".", 1)[0]
    assert addr.startswith(prefix + ".") and addr.endswith("/24") and gw == prefix + ".1"
    # host side: bridge with the gateway, veth enslaved with hairpin, forwarding only on the bridge
    br_addrs = {a["local"] for a in ip_json("addr", "show", "dev", net["bridge"])[0]["addr_info"]}
    assert gw in br_addrs
    assert "PROMISC" in ip_json("link", "show", "dev", net["bridge"])[0]["flags"]
    assert links_on(net["bridge"]) == [veth["name"]]
    with open(f"/sys/class/net/{veth['name']}/brport/hairpin_mode") as f:
        assert f.read().strip() == "1"
    with open(f"/proc/sys/net/ipv4/conf/{net['bridge']}/forwarding") as f:
        assert f.read().strip() == "1"
    # pod side: address, mtu, up, default route via the gateway
    (link,) = ip_json("addr", "show", "dev", "eth0", netns=ns)
    assert link["mtu"] == 1400 and "UP" in link["flags"] and link["address"] == pod["mac"]
    assert f"{link['addr_info'][0]['local']}/24" == addr
    routes = ip_json("route", "show", "default", netns=ns)
    assert routes[0]["gateway"] == gw
    # ipMasq rule tagged with this container
    assert len(tagged_rules(net["name"], cid)) == 1
    # a second ADD is refused and leaves the live pod (and its lease) alone
    again = cni(our_bin, "bridge", "ADD", conf, cid, ns)
    assert again.rc != 0 and again.out["code"] == 4
    assert os.path.exists(os.path.join(net["data_dir"], net["name"], addr[:-3]))
    # CHECK passes with the result as prevResult
    ok(cni(our_bin, "bridge", "CHECK", {**conf, "prevResult": res}, cid, ns))
    # GC (CNI 1.1) keeps a valid attachment's lease and rule
    gc = {
        **conf,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"}],
    }
    ok(cni(our_bin, "bridge", "GC", gc))
    assert len(tagged_rules(net["name"], cid)) == 1
    assert os.path.exists(os.path.join(net["data_dir"], net["name"], addr[:-3]))
    # DEL removes veth, lease and rule; a second DEL and a DEL without netns also succeed
    ok(cni(our_bin, "bridge", "DEL", conf, cid, ns))
    assert links_on(net["bridge"]) == []
    assert [link["ifname"] for link in ip_json("link", "show", netns=ns)] == ["lo"]
    assert tagged_rules(net["name"], cid) == []
    leases = os.listdir(os.path.join(net["data_dir"], net["name"]))
    assert sorted(leases) == ["last_reserved_ip.0", "lock"]
    ok(cni(our_bin, "bridge", "DEL", conf, cid, ns))
    ok(cni(our_bin, "bridge", "DEL", conf, cid, "/nonexistent/netns"))
    ok(cni(our_bin, "bridge", "STATUS", {**conf, "cniVersion": "1.1.0"}))
    failed = cni(our_bin, "bridge", "CHECK", {**conf, "prevResult": res}, cid, ns)
    assert failed.rc != 0 and failed.out["code"] == 3


def test_bridge_with_reference_host_local(our_bin, make_netns, net):
    """ipam.type is exec'd from CNI_PATH, so the reference host-local works under our bridge."""
    if not os.path.exists("/usr/lib/cni/host-local"):
        pytest.skip("reference plugins not installed")
    ns, cid = make_netns(), new_cid(net)
    conf = bridge_conf(net["name"], net["bridge"], net["subnet"], net["data_dir"])
    path = f"/usr/lib/cni:{our_bin}"
    res = ok(cni(our_bin, "bridge", "ADD", conf, cid, ns, path=path))
    check_result_schema(res)
    with open(os.path.join(net["data_dir"], net["name"], res["ips"][0]["address"][:-3])) as f:
        assert f.read().split()[0] == cid
    ok(cni(our_bin, "bridge", "DEL", conf, cid, ns, path=path))
    assert links_on(net["bridge"]) == []


def test_old_result_version(our_bin, make_netns, net):
    ns, cid = make_netns(), new_cid(net)
    conf = bridge_conf(net["name"], net["bridge"], net["subnet"], net["data_dir"], "0.4.0")
    res = ok(cni(our_bin, "bridge", "ADD", conf, cid, ns))
    assert res["cniVersion"] == "0.4.0" and res["ips"][0]["version"] == "4"
    ok(cni(our_bin, "bridge", "DEL", conf, cid, ns))


def test_host_local_files_ranges_and_exhaustion(our_bin, net):
    prefix = net["subnet"].rsplit(".", 1)[0]
    conf = {
        "cniVersion": "1.0.0",
        "name": net["name"],
        "ipam": {
            "type": "host-local",
            "dataDir": net["data_dir"],
            "ranges": [
                [
                    {
                        "subnet": net["subnet"],
                        "rangeStart": f"{prefix}.10",
                        "rangeEnd": f"{prefix}.12",
                        "gateway": f"{prefix}.254",
                    }
                ]
            ],
            "routes": [{"dst": "192.0.2.0/24"}],
        },
    }
    store = os.path.join(net["data_dir"], net["name"])
    got = []
    for i in range(3):
        res = ok(cni(our_bin, "host-local", "ADD", conf, f"c{i}", "/x"))
        assert res["ips"][0]["gateway"] == f"{prefix}.254"
        assert res["routes"] == [{"dst": "192.0.2.0/24"}]
        got.append(res["ips"][0]["address"])
    assert got == [f"{prefix}.{n}/24" for n in (10, 11, 12)]
    with open(os.path.join(store, f"{prefix}.10"), newline="") as f:
        assert f.read() == "c0\r\neth0"
    with open(os.path.join(store, "last_reserved_ip.0")) as f:
        assert f.read() == f"{prefix}.12"
    full = cni(our_bin, "host-local", "ADD", conf, "c3", "/x")
    assert full.rc != 0 and full.out["code"] == 11
    # same container + ifname again: the same address (idempotent ADD)
    assert ok(cni(our_bin, "host-local", "ADD", conf, "c1", "/x"))["ips"][0]["address"] == got[1]
    ok(cni(our_bin, "host-local", "DEL", conf, "c1", "/x"))
    ok(cni(our_bin, "host-local", "DEL", conf, "c1", "/x"))
    # round robin survives a "restart" (each call is a new process reading the files)
    assert ok(cni(our_bin, "host-local", "ADD", conf, "c4", "/x"))["ips"][0]["address"] == got[1]
    # GC keeps only valid attachments
    gc_conf = {
        **conf,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "c0", "ifname": "eth0"}],
    }
    ok(cni(our_bin, "host-local", "GC", gc_conf))
    assert sorted(os.listdir(store)) == [f"{prefix}.10", "last_reserved_ip.0", "lock"]
    ok(cni(our_bin, "host-local", "STATUS", {**conf, "cniVersion": "1.1.0"}))


def test_host_local_requested_ips(our_bin, net):
    """The `ips` capability (docker --ip): anywhere in the subnet but the gateway, once."""
    prefix = net["subnet"].rsplit(".", 1)[0]
    conf = {"cniVersion": "1.0.0", "name": net["name"], "ipam": {
        "type": "host-local", "dataDir": net["data_dir"],
        "ranges": [[{"subnet": net["subnet"], "rangeStart": f"{prefix}.10",
                     "rangeEnd": f"{prefix}.12"}]]}}

    def asking(ip: str) -> dict:
        return {**conf, "runtimeConfig": {"ips": [ip]}}

    res = ok(cni(our_bin, "host-local", "ADD", asking(f"{prefix}.77/24"), "s0", "/x"))
    assert res["ips"][0]["address"] == f"{prefix}.77/24"  # outside the dynamic range is fine
    again = ok(cni(our_bin, "host-local", "ADD", asking(f"{prefix}.77"), "s0", "/x"))
    assert again["ips"][0]["address"] == f"{prefix}.77/24"  # idempotent for its owner
    taken = cni(our_bin, "host-local", "ADD", asking(f"{prefix}.77"), "s1", "/x")
    assert taken.rc != 0 and "in use" in taken.out["msg"]
    for bad in (f"{prefix}.1", "192.0.2.9", f"{prefix}.255"):
        refused = cni(our_bin, "host-local", "ADD", asking(bad), "s2", "/x")
        assert refused.rc != 0 and refused.out["code"] == 7, bad
    ok(cni(our_bin, "host-local", "DEL", conf, "s0", "/x"))
    store = os.path.join(net["data_dir"], net["name"])
    assert not [n for n in os.listdir(store) if n[0].isdigit()]


def test_host_local_concurrent_adds_are_distinct(our_bin, net):
    conf = {
        "cniVersion": "1.0.0",
        "name": net["name"],
        "ipam": {
            "type": "host-local",
            "dataDir": net["data_dir"],
            "ranges": [[{"subnet": net["subnet"]}]],
        },
    }

    def add(i: int) -> str:
        return ok(cni(our_bin, "host-local", "ADD", conf, f"ctr{i}", "/x"))["ips"][0]["address"]

    with ThreadPoolExecutor(30) as pool:
        ips = list(pool.map(add, range(30)))
    assert len(set(ips)) == 30
    with ThreadPoolExecutor(30) as pool:
        list(
            pool.map(
                lambda i: ok(cni(our_bin, "host-local", "DEL", conf, f"ctr{i}", "/x")), range(30)
            )
        )
    assert sorted(os.listdir(os.path.join(net["data_dir"], net["name"]))) == [
        "last_reserved_ip.0",
        "lock",
    ]


def test_loopback(our_bin, make_netns):
    ns = make_netns()
    conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    res = ok(cni(our_bin, "loopback", "ADD", conf, "c", ns, "lo"))
    assert res["ips"][0]["address"] == "127.0.0.1/8"
    assert "UP" in ip_json("link", "show", "lo", netns=ns)[0]["flags"]
    ok(cni(our_bin, "loopback", "CHECK", {**conf, "prevResult": res}, "c", ns, "lo"))
    ok(cni(our_bin, "loopback", "DEL", conf, "c", ns, "lo"))
    ok(cni(our_bin, "loopback", "DEL", conf, "c", "/nonexistent", "lo"))


@pytest.mark.parametrize("backend", ["nft", "nft-cli", "iptables"])
def test_portmap_rules_tagged_and_removed(our_bin, net, backend):
    cid = new_cid(net)
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": net["bridge"], "mac": "02:00:00:00:00:01"},
            {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/x"},
        ],
        "ips": [{"address": "10.88.250.7/24", "gateway": "10.88.250.1", "interface": 1}],
    }
    conf = {
        "cniVersion": "1.0.0",
        "name": net["name"],
        "type": "portmap",
        "prevResult": prev,
        "runtimeConfig": {
            "portMappings": [
                {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 18053, "containerPort": 53, "protocol": "udp"},
            ]
        },
    }
    env = {"BERTH_CNI_FIREWALL": backend}
    res = ok(cni(our_bin, "portmap", "ADD", conf, cid, "/x", extra_env=env))
    assert res["ips"] == prev["ips"]  # prevResult passes through
    rules = firewall.list_owned(firewall.tag("portmap", net["name"], cid))
    assert len(rules) == 8  # per mapping: dnat in prerouting+output, 2 masquerades
    text = "\n".join(rules)
    assert "10.88.250.7" in text and ("18080" in text) and ("18053" in text)
    ok(cni(our_bin, "portmap", "CHECK", conf, cid, "/x", extra_env=env))
    ok(cni(our_bin, "portmap", "DEL", conf, cid, "/x", extra_env=env))
    assert firewall.list_owned(firewall.tag("portmap", net["name"], cid)) == []
    ok(cni(our_bin, "portmap", "DEL", conf, cid, "/x", extra_env=env))
    # GC (CNI 1.1) drops the rules of containers the runtime no longer lists
    ok(cni(our_bin, "portmap", "ADD", conf, cid, "/x", extra_env=env))
    gc = {
        "cniVersion": "1.1.0",
        "name": net["name"],
        "type": "portmap",
        "cni.dev/valid-attachments": [{"containerID": "other", "ifname": "eth0"}],
    }
    ok(cni(our_bin, "portmap", "GC", gc, extra_env=env))
    assert firewall.list_owned(firewall.tag("portmap", net["name"], cid)) == []
    firewall.prune()
