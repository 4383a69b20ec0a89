"""Fixtures: our plugins installed to a temp dir, pod netns, a private bridge and subnet."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from cni_plugins import firewall
from cni_plugins.install import install
from runtime.network import netns as netns_mod
from tests.network.helpers import free_subnet, rand_name
from tests.network.plugin_server import server_pids, start_server, stop_server, wait_for

if os.geteuid() != 0:
    pytest.skip("network tests need root", allow_module_level=True)


@pytest.fixture(scope="session")
def plugin_socket(tmp_path_factory):
    """A private warm plugin server for the session; stopped (and checked gone) at the end."""
    path = str(tmp_path_factory.mktemp("cnisrv") / "plugins.sock")
    proc = start_server(path)
    yield path
    stop_server(proc, path)
    assert wait_for(lambda: not server_pids(path), 10), "plugin server processes left behind"


@pytest.fixture(scope="session")
def our_bin(tmp_path_factory, plugin_socket) -> str:
    """C launchers talking to the session's server: the path production takes."""
    d = str(tmp_path_factory.mktemp("cnibin"))
    install(d, socket_path=plugin_socket)
    return d


@pytest.fixture(scope="session")
def fallback_bin(tmp_path_factory) -> str:
    """C launchers whose socket never exists: every call execs the Python plugin."""
    d = tmp_path_factory.mktemp("cnifallback")
    install(str(d), socket_path=str(d / "absent.sock"))
    return str(d)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    yield str(d)
    ns_dir = d / "netns"
    if ns_dir.exists():
        for name in os.listdir(ns_dir):
            netns_mod.remove(str(ns_dir / name))


@pytest.fixture
def make_netns(run_dir):
    """Factory of pinned pod netns; all removed at teardown."""
    made: list[str] = []

    def make() -> str:
        path = netns_mod.netns_path(run_dir, rand_name("bn"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        made.append(path)
        return path

    yield make
    for path in made:
        netns_mod.remove(path)


@pytest.fixture
def net(tmp_path):
    """A bridge name and /24 nobody else uses; the bridge and our firewall rules go at the end."""
    bridge = rand_name("bt")
    env: dict = {
        "bridge": bridge,
        "subnet": free_subnet(),
        "data_dir": str(tmp_path / "ipam"),
        "name": "t" + bridge,
        "cids": [],
    }
    yield env
    name = env["name"]
    for cid in env["cids"]:
        firewall.remove(firewall.tag("portmap", name, cid))
        firewall.remove(firewall.tag("bridge", name, f"{cid}/eth0"))
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run(["ip", "link", "del", bridge], check=True, capture_output=True)
    firewall.prune()


def new_cid(env: dict) -> str:
    cid = os.urandom(32).hex()
    env["cids"].append(cid)
    return cid
