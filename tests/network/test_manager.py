"""berthd's CNI manager with our plugins and with Debian's reference ones: real pod networks."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess

import pytest

from cni_plugins import firewall
from runtime.network import netns as netns_mod
from runtime.network.cni import CNIConfig, CNIManager, PodNetworkRequest, PortMapping
from tests.network.conftest import new_cid
from tests.network.helpers import (
    REFERENCE_BIN,
    PodServer,
    in_netns,
    links_on,
    restore_forwarding,
    snapshot_forwarding,
    tagged_rules,
    tcp_fetch,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=["ours", "reference"])
def impl(request, our_bin):
    if request.param == "reference":
        if not os.path.exists(f"{REFERENCE_BIN}/bridge"):
            pytest.skip("containernetworking-plugins not installed")
        # the reference bridge flips the global ip_forward on isGateway; put it back afterwards
        saved = snapshot_forwarding()
        yield [REFERENCE_BIN]
        restore_forwarding(saved)
    else:
        yield [our_bin]


def make_manager(tmp_path, net, bin_dirs) -> CNIManager:
    return CNIManager(
        CNIConfig(
            conf_dir=str(tmp_path / "net.d"),
            bin_dirs=bin_dirs,
            state_dir=str(tmp_path / "state"),
            default_subnet=net["subnet"],
            default_bridge=net["bridge"],
            default_name=net["name"],
            ipam_data_dir=net["data_dir"],
        )
    )


def pod(net, netns: str, ports: list[PortMapping] | None = None) -> PodNetworkRequest:
    cid = new_cid(net)
    return PodNetworkRequest(
        id=cid,
        name=f"p-{cid[:6]}",
        namespace="default",
        uid=cid[:32],
        netns=netns,
        port_mappings=ports or [],
    )


def leases(net) -> list[str]:
    d = os.path.join(net["data_dir"], net["name"])
    return [n for n in os.listdir(d) if n[0].isdigit()] if os.path.isdir(d) else []


def udp_ask(addr: str, port: int) -> bytes:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    try:
        for _ in range(30):
            s.sendto(b"ping", (addr, port))
            try:
                return s.recv(100)
            except TimeoutError:
                continue
        return b""
    finally:
        s.close()


def test_two_pods_talk(tmp_path, net, impl, make_netns):
    mgr = make_manager(tmp_path, net, impl)
    assert mgr.status().ready
    hp, hpu = random.randint(20000, 29999), random.randint(30000, 32000)
    a = pod(net, make_netns(), [PortMapping(hp, 8080), PortMapping(hpu, 5353, "UDP")])
    b = pod(net, make_netns())
    ra = asyncio.run(mgr.setup(a))
    rb = asyncio.run(mgr.setup(b))
    a_ip, b_ip = ra.ips[0], rb.ips[0]
    gw = ra.raw["ips"][0]["gateway"]
    assert a_ip != b_ip and all(x.startswith(net["subnet"][:-4]) for x in (a_ip, b_ip))
    servers = [PodServer(a.netns, 8080, "hello-a"), PodServer(b.netns, 8080, "hello-b")]
    udp = PodServer(a.netns, 5353, "udp", udp=True)
    try:
        assert in_netns(a.netns, "busybox", "ping", "-c1", "-W2", b_ip).returncode == 0
        assert in_netns(a.netns, "busybox", "ping", "-c1", "-W2", gw).returncode == 0
        assert (
            "UP"
            in subprocess.run(
                ["nsenter", f"--net={a.netns}", "ip", "link", "show", "lo"],
                capture_output=True,
                text=True,
            ).stdout
        )
        assert tcp_fetch(b_ip, 8080, netns=a.netns) == "hello-b"
        assert tcp_fetch(a_ip, 8080, netns=b.netns) == "hello-a"
        assert tcp_fetch("127.0.0.1", hp) == "hello-a"  # hostPort from the host's loopback
        assert tcp_fetch(gw, hp, netns=a.netns) == "hello-a"  # hairpin via the bridge IP
        assert udp_ask("127.0.0.1", hpu) == b"udp-ping"
    finally:
        for s in servers:
            s.stop()
        udp.stop()
    asyncio.run(mgr.teardown(a))
    asyncio.run(mgr.teardown(b))
    assert links_on(net["bridge"]) == [] and leases(net) == []
    assert os.listdir(mgr.cache_dir) == []
    assert tagged_rules(net["name"], a.id) == []
    asyncio.run(mgr.teardown(a))  # a repeated teardown is fine


def test_teardown_after_restart_uses_cache(tmp_path, net, our_bin, make_netns):
    mgr = make_manager(tmp_path, net, [our_bin])
    p = pod(net, make_netns(), [PortMapping(random.randint(20000, 29999), 80)])
    asyncio.run(mgr.setup(p))
    assert tagged_rules(net["name"], p.id) and links_on(net["bridge"])
    # config edited away, daemon restarted: the cached config and result still drive DEL
    os.unlink(os.path.join(mgr.cfg.conf_dir, "10-berth.conflist"))
    mgr2 = CNIManager(CNIConfig(**{**mgr.cfg.__dict__, "install_default": False}))
    asyncio.run(mgr2.check(p))
    asyncio.run(mgr2.teardown(p))
    assert (
        links_on(net["bridge"]) == []
        and leases(net) == []
        and tagged_rules(net["name"], p.id) == []
    )


def test_status_default_conf_and_pod_cidr(tmp_path, net, our_bin):
    cfg = CNIConfig(
        conf_dir=str(tmp_path / "none"),
        bin_dirs=[our_bin],
        state_dir=str(tmp_path / "s"),
        install_default=False,
    )
    st = CNIManager(cfg).status()
    assert (
        not st.ready and st.reason == "NetworkPluginNotReady" and "no network config" in st.message
    )
    empty_bin = tmp_path / "emptybin"
    empty_bin.mkdir()
    mgr = make_manager(tmp_path, net, [str(empty_bin)])
    st = mgr.status()
    assert not st.ready and "bridge" in st.message and "host-local" in st.message
    mgr.cfg.bin_dirs = [our_bin]
    assert mgr.status().ready
    assert mgr.load().generated and mgr.load().plugins[0]["bridge"] == net["bridge"]
    assert mgr.update_pod_cidr("10.88.77.0/24")
    assert mgr.load().plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.88.77.0/24"}]]
    # a user's own conflist sorts first and is never rewritten
    user = tmp_path / "net.d" / "05-user.conflist"
    user.write_text('{"cniVersion":"1.0.0","name":"u","plugins":[{"type":"loopback"}]}')
    assert mgr.load().name == "u" and not mgr.update_pod_cidr("10.88.78.0/24")


def test_thirty_concurrent_pods_get_distinct_ips(tmp_path, net, our_bin, make_netns):
    mgr = make_manager(tmp_path, net, [our_bin])
    pods = [pod(net, make_netns()) for _ in range(30)]

    async def run() -> list[str]:
        results = await asyncio.gather(*(mgr.setup(p) for p in pods))
        ips = [r.ips[0] for r in results]
        await asyncio.gather(*(mgr.teardown(p) for p in pods))
        return ips

    ips = asyncio.run(run())
    assert len(set(ips)) == 30
    assert links_on(net["bridge"]) == [] and leases(net) == []


def test_churn_leaves_nothing(tmp_path, net, our_bin, run_dir):
    """BERTH_NET_CHURN=500 for the long run by hand; CI does 100 cycles."""
    cycles = int(os.environ.get("BERTH_NET_CHURN", "100"))
    mgr = make_manager(tmp_path, net, [our_bin])
    host_veths: list[str] = []

    async def churn() -> None:
        for i in range(cycles):
            path = await netns_mod.create(run_dir, f"churn{i}")
            p = pod(net, path, [PortMapping(20000 + i % 5000, 80)])
            res = await mgr.setup(p)
            host_veths.append(res.interfaces[1]["name"])
            await mgr.teardown(p)
            netns_mod.remove(path)

    asyncio.run(churn())
    assert leases(net) == [] and links_on(net["bridge"]) == []
    assert os.listdir(mgr.cache_dir) == []
    assert os.listdir(os.path.join(run_dir, "netns")) == []
    with open("/proc/self/mountinfo") as f:
        assert run_dir not in f.read()
    existing = set(os.listdir("/sys/class/net"))
    assert not existing & set(host_veths)
    assert not [c for c in net["cids"] if tagged_rules(net["name"], c)]
    assert not firewall.list_owned(firewall.tag("portmap", net["name"], net["cids"][-1]))
