"""vxlan plugin: three nodes (netns on an underlay switch), pods on each, one flat network.

Run with our bridge/host-local as the delegates and with the reference ones from /usr/lib/cni
chained in where ours are; both must give the same network and leave the same nothing behind.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_plugins.vxlan_conf import NodeConf
from runtime.network import netns as netns_mod
from tests.fixtures._proc import wait_until
from tests.network.helpers import REFERENCE_BIN, cni, ok
from tests.network.overlay import PORT, VNI, Cluster, Pod, node_state, pin_netns, sh, snmp

pytestmark = pytest.mark.timeout(600)
HTTP_PORT = 8080
BLOB = 10 * 1024 * 1024


@pytest.fixture(params=["ours", "reference"])
def cluster(request, tmp_path, our_bin):
    """Three nodes; the reference variant finds bridge/host-local in /usr/lib/cni first."""
    path = our_bin if request.param == "ours" else f"{REFERENCE_BIN}:{our_bin}"
    c = Cluster(str(tmp_path), 3, our_bin, path)
    c.delegates = request.param
    yield c
    c.close()
    left = [p for p in os.listdir(tmp_path / "ns")]
    assert not left, f"netns left behind: {left}"
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert c.sfx not in root_links, "a link of this test reached the host's netns"


def _leases(c: Cluster) -> list[str]:
    """IPAM lease files (named by IP) and vxlan state records still on disk."""
    out = []
    for node in c.nodes:
        for base, _dirs, files in os.walk(node.state_dir):
            out += [os.path.join(base, f) for f in files
                    if f != "lock" and not f.startswith("last_reserved_ip")]
    return out


def _ping(a: Pod, b: Pod) -> tuple[str, int]:
    proc = subprocess.run(["nsenter", f"--net={a.netns}", "busybox", "ping", "-c", "1", "-W", "5",
                           b.ip], capture_output=True, text=True, timeout=30)
    return f"{a.ip}->{b.ip}", proc.returncode


def _listening(netns: str) -> bool:
    return f":{HTTP_PORT} " in sh(netns, "ss", "-Hltn")


def _fetch(a: Pod, b: Pod) -> tuple[str, str]:
    """HTTP/1.0 GET through busybox nc: busybox-static's wget segfaults in these namespaces."""
    proc = subprocess.run(["nsenter", f"--net={a.netns}", "busybox", "nc", "-w", "30", b.ip,
                           str(HTTP_PORT)], input=b"GET /blob HTTP/1.0\r\n\r\n",
                          capture_output=True, timeout=120)
    head, _sep, body = proc.stdout.partition(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    return f"{a.ip}->{b.ip}", hashlib.sha256(body).hexdigest() if ok else repr(head[:80])


def test_pods_across_nodes_reach_each_other_and_del_leaves_nothing(cluster, tmp_path):
    c = cluster
    before = {n.index: node_state(n.netns) for n in c.nodes}
    pods = [c.add_pod(n) for n in c.nodes for _ in range(2)]

    # addresses from each node's subnet; MTU = underlay 1500 - 50 on the pod and the node side
    for pod in pods:
        assert pod.ip.startswith(f"10.244.{pod.node.index}.")
        assert f"mtu {1450} " in sh(pod.netns, "ip", "link", "show", "eth0")
    vx = sh(c.nodes[0].netns, "ip", "-d", "link", "show", f"berthvx0.{VNI}")
    assert "mtu 1450" in vx and f"vxlan id {VNI}" in vx and f"dstport {PORT}" in vx
    assert "master berthvx0" in vx
    # which bridge plugin ran: only the reference one turns on the node's global ip_forward
    forward = sh(c.nodes[0].netns, "cat", "/proc/sys/net/ipv4/ip_forward").strip()
    assert forward == ("1" if c.delegates == "reference" else "0")

    # ADD again: the same result, and the node is left exactly as it was
    mid = node_state(c.nodes[0].netns)
    rc, again, err = c.cni(c.nodes[0], "ADD", c.conf(c.nodes[0]), pods[0].cid, pods[0].netns)
    assert rc == 0, (again, err)
    assert again == pods[0].result
    assert node_state(c.nodes[0].netns) == mid

    rc, out, err = c.cni(c.nodes[0], "CHECK", {**c.conf(c.nodes[0]), "prevResult": pods[0].result},
                         pods[0].cid, pods[0].netns)
    assert rc == 0, (out, err)

    with ThreadPoolExecutor(4) as pool:
        pings = list(pool.map(lambda ab: _ping(*ab), itertools.permutations(pods, 2)))
    assert [p for p in pings if p[1] != 0] == [], pings

    blob_dir = tmp_path / "www"
    blob_dir.mkdir()
    data = os.urandom(BLOB)
    (blob_dir / "blob").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    servers = [subprocess.Popen(["nsenter", f"--net={p.netns}", "busybox", "httpd", "-f", "-p",
                                 str(HTTP_PORT), "-h", str(blob_dir)]) for p in pods]
    try:
        for p in pods:
            wait_until(functools.partial(_listening, p.netns), 20, f"httpd in {p.ip}")
        cross = [(a, b) for a, b in itertools.permutations(pods, 2) if a.node is not b.node]
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda ab: _fetch(*ab), cross))
    finally:
        for s in servers:
            s.kill()
            s.wait()
    assert [g for g in got if g[1] != want] == []

    # no fragment made, dropped or reassembled anywhere: the MTU leaves room for the header
    for ns in [n.netns for n in c.nodes] + [p.netns for p in pods]:
        counters = snmp(ns)
        frag = {k: counters[k] for k in ("FragCreates", "FragFails", "ReasmReqds")}
        assert frag == {"FragCreates": 0, "FragFails": 0, "ReasmReqds": 0}, (ns, frag)

    for pod in pods:
        c.del_pod(pod)
    c.del_pod(pods[0])  # DEL is idempotent
    for node in c.nodes:
        assert node_state(node.netns) == before[node.index], f"node {node.index} not restored"
    assert _leases(c) == []


def test_peer_entries_checked_and_restored_by_the_next_add(cluster):
    c = cluster
    n1 = c.nodes[0]
    before = node_state(n1.netns)
    pod = c.add_pod(n1)
    sh(n1.netns, "ip", "route", "del", c.nodes[1].subnet)
    rc, out, _err = c.cni(n1, "CHECK", {**c.conf(n1), "prevResult": pod.result}, pod.cid,
                          pod.netns)
    assert rc != 0 and out["code"] == 100 and c.nodes[1].subnet in out["msg"]
    second = c.add_pod(n1)  # another pod's ADD puts the missing route back
    rc, out, err = c.cni(n1, "CHECK", {**c.conf(n1), "prevResult": pod.result}, pod.cid, pod.netns)
    assert rc == 0, (out, err)
    c.del_pod(pod)
    c.del_pod(second)
    assert node_state(n1.netns) == before
    assert _leases(c) == []


def test_concurrent_adds_and_dels_on_one_node(cluster):
    """The node lock: parallel first ADDs build the node once, parallel last DELs undo it once."""
    c = cluster
    node = c.nodes[1]
    before = node_state(node.netns)
    with ThreadPoolExecutor(4) as pool:
        pods = list(pool.map(lambda _i: c.add_pod(node), range(4)))
    assert len({p.ip for p in pods}) == 4
    assert sh(node.netns, "ip", "-o", "link", "show", "type", "vxlan").count("\n") == 1
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(c.del_pod, pods))
    assert node_state(node.netns) == before
    assert _leases(c) == []


def test_gc_forgets_stale_pods_and_tears_an_empty_node_down(tmp_path, our_bin):
    """CNI 1.1 GC (ours only: the reference plugins 1.1.1 predate GC)."""
    c = Cluster(str(tmp_path), 2, our_bin, our_bin)
    try:
        node = c.nodes[0]
        before = node_state(node.netns)
        keep, stale = c.add_pod(node), c.add_pod(node)
        valid = [{"containerID": keep.cid, "ifname": "eth0"}]
        gc = {**c.conf(node, "1.1.0"), "cni.dev/valid-attachments": valid}
        rc, out, err = c.cni(node, "GC", gc)
        assert rc == 0, (out, err)
        assert [os.path.basename(p) for p in _leases(c) if "/pods/" in p] == [f"{keep.cid}.eth0"]
        assert len([p for p in _leases(c) if "/ipam/" in p]) == 1
        rc, out, err = c.cni(node, "GC", {**gc, "cni.dev/valid-attachments": []})
        assert rc == 0, (out, err)
        assert _leases(c) == []
        assert "vxlan" not in sh(node.netns, "ip", "-d", "link")
        for pod in (keep, stale):  # the runtime removes a stale pod's netns, veth and all
            c.pods.remove(pod)
            netns_mod.remove(pod.netns)
        # the kernel cleans a dead netns up (its veths too) from a workqueue, a moment later
        wait_until(lambda: node_state(node.netns) == before, 30, "the node restored")
    finally:
        c.close()


BAD = [
    ({"subnet": "10.245.1.0/24"}, "not inside clusterCIDR"),
    ({"peers": [{"ip": "192.168.250.2", "subnet": "10.244.1.128/25"}]}, "overlaps"),
    ({"localIP": "192.168.250.99"}, "not an address of this node"),
    ({"underlayDevice": "nosuch0"}, "does not exist"),
    ({"vni": 1 << 24}, "vni must be"),
    ({"mtu": 100}, "below"),
]


@pytest.mark.parametrize(("change", "msg"), BAD, ids=[b[1] for b in BAD])
def test_bad_config_is_refused_with_nothing_created(tmp_path, our_bin, change, msg):
    c = Cluster(str(tmp_path), 2, our_bin, our_bin)
    try:
        node = c.nodes[0]
        before = node_state(node.netns)
        pod = Pod(node, "c0ffee", os.path.join(str(tmp_path), "ns", "podbad"))
        c.pods.append(pod)
        pin_netns(pod.netns)
        rc, out, _err = c.cni(node, "ADD", {**c.conf(node), **change}, pod.cid, pod.netns)
        assert rc == 1 and out["code"] == 7 and msg in out["msg"], out
        assert node_state(node.netns) == before
        assert _leases(c) == []
        assert sh(pod.netns, "ip", "-o", "link").count("\n") == 1  # lo only
    finally:
        c.close()


def test_version(our_bin):
    res = ok(cni(our_bin, "vxlan", "VERSION", {"cniVersion": "1.0.0"}))
    assert "1.0.0" in res["supportedVersions"] and "0.4.0" in res["supportedVersions"]


def test_deploy_conflists_are_valid_and_symmetric():
    """deploy/overlay: each node's vxlan config validates, and each lists the other as a peer."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "overlay")
    nodes = []
    for name in ("node-a.conflist", "node-b.conflist"):
        with open(os.path.join(root, name)) as f:
            conflist = json.load(f)
        assert [p["type"] for p in conflist["plugins"]] == ["vxlan", "portmap"]
        nodes.append(NodeConf({**conflist["plugins"][0], "name": conflist["name"]}))
    a, b = nodes
    assert [(p.ip, p.subnet.text) for p in a.peers] == [(b.local_ip, b.subnet.text)]
    assert [(p.ip, p.subnet.text) for p in b.peers] == [(a.local_ip, a.subnet.text)]


def test_docker_overlay_rm_sweeps_what_a_lost_del_left(tmp_path, our_bin):
    """engine.overlay.sweep (`docker network rm` of an overlay): a pod whose DEL never ran (its
    netns gone, as after a crash) leaves the node record; the sweep undoes it and the state."""
    c = Cluster(str(tmp_path), 2, our_bin, our_bin)
    try:
        node = c.nodes[0]
        before = node_state(node.netns)
        pod = c.add_pod(node)
        c.pods.remove(pod)
        netns_mod.remove(pod.netns)  # no DEL: the pod record and the node side stay
        data_dir = c.conf(node)["dataDir"]
        assert os.path.exists(os.path.join(data_dir, f"overlay{c.sfx}", "node.json"))
        script = ("import asyncio, sys; from pathlib import Path; from engine import overlay; "
                  "asyncio.run(overlay.sweep(Path(sys.argv[1]), sys.argv[2]))")
        subprocess.run(["nsenter", f"--net={node.netns}", sys.executable, "-c", script,
                        data_dir, f"overlay{c.sfx}"], check=True, timeout=60,
                       cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
        assert not os.path.exists(os.path.join(data_dir, f"overlay{c.sfx}"))
        wait_until(lambda: node_state(node.netns) == before, 30, "the node restored")
    finally:
        c.close()
