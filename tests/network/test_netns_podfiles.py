"""Pinned netns lifecycle and the pod's DNS/hosts/hostname files."""

from __future__ import annotations

import asyncio
import os

import pytest

from runtime.network import netns
from runtime.network.podfiles import DNSConfig, write_pod_files

pytestmark = pytest.mark.timeout(60)


def test_netns_create_remove_idempotent(run_dir):
    path = asyncio.run(netns.create(run_dir, "bnx" + os.urandom(3).hex()))
    assert netns.is_pinned(path)
    with open(path) as f, open("/proc/self/ns/net") as home:
        assert os.fstat(f.fileno()).st_ino != os.fstat(home.fileno()).st_ino
    with pytest.raises(FileExistsError):
        asyncio.run(netns.create(run_dir, os.path.basename(path)))
    netns.remove(path)
    assert not netns.is_pinned(path) and not os.path.exists(path)
    netns.remove(path)  # already gone: still fine
    with pytest.raises(ValueError):
        netns.netns_path(run_dir, "../evil")


def test_pod_files(tmp_path):
    dns = DNSConfig(
        servers=["10.96.0.10"],
        searches=["default.svc.cluster.local", "svc.cluster.local"],
        options=["ndots:5"],
    )
    paths = write_pod_files(str(tmp_path / "p"), "web-0", ["10.88.3.4"], dns)
    with open(paths["resolv.conf"]) as f:
        assert f.read() == (
            "search default.svc.cluster.local svc.cluster.local\n"
            "nameserver 10.96.0.10\noptions ndots:5\n"
        )
    with open(paths["hosts"]) as f:
        hosts = f.read()
    assert "127.0.0.1\tlocalhost\n" in hosts and hosts.endswith("10.88.3.4\tweb-0\n")
    with open(paths["hostname"]) as f:
        assert f.read() == "web-0\n"


def test_pod_files_host_network_and_no_dns(tmp_path):
    host_resolv = tmp_path / "host-resolv"
    host_resolv.write_text("nameserver 127.0.0.53\n")
    host_hosts = tmp_path / "host-hosts"
    host_hosts.write_text("127.0.0.1 localhost node1\n")
    dns = DNSConfig(servers=["10.96.0.10"])
    paths = write_pod_files(
        str(tmp_path / "h"),
        "node1",
        ["10.88.3.4"],
        dns,
        host_network=True,
        host_resolv=str(host_resolv),
        host_hosts=str(host_hosts),
    )
    with open(paths["resolv.conf"]) as f:  # kubelet's DNS config wins, as in containerd
        assert f.read() == "nameserver 10.96.0.10\n"
    with open(paths["hosts"]) as f:
        assert f.read() == "127.0.0.1 localhost node1\n"
    paths = write_pod_files(str(tmp_path / "n"), "p", [], None, host_resolv=str(host_resolv))
    with open(paths["resolv.conf"]) as f:
        assert f.read() == "nameserver 127.0.0.53\n"
