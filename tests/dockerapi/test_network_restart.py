"""User networks outlive berthd: after a crash and a restart the embedded DNS answers again,
and removing everything afterwards leaves no bridge, rule, lease or conflist behind."""

from __future__ import annotations

import contextlib
import subprocess
import time

import docker

from runtime.network.isolation import table_name


def _run(cli: docker.DockerClient, ref: str, net: str, script: str) -> bytes:
    out = cli.containers.run(ref, ["sh", "-c", script], network=net, remove=True)
    return bytes(out)


def test_dns_and_isolation_come_back_after_crash(berthd_fn, e2e_images):
    d = berthd_fn
    ref = e2e_images["busybox"].ref
    sock = f"unix://{d.docker_socket}"
    with contextlib.closing(docker.DockerClient(base_url=sock, timeout=60)) as cli:
        cli.images.pull(ref)
        net = cli.networks.create("rst-net", driver="bridge", check_duplicate=True)
        bridge = f"br-{net.id[:12]}"
        srv = cli.containers.run(ref, ["sleep", "300"], name="rst-srv", detach=True,
                                 network="rst-net")
        assert _run(cli, ref, "rst-net", "ping -c1 -W5 rst-srv >/dev/null && echo ok") == b"ok\n"
    d.kill()  # a crash: listeners die with berthd, bridge and container stay
    d.start()
    with contextlib.closing(docker.DockerClient(base_url=sock, timeout=60)) as cli:
        assert _run(cli, ref, "rst-net", "ping -c1 -W5 rst-srv >/dev/null && echo ok") == b"ok\n"
        table = table_name(str(d.state_dir))
        rules = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                               text=True, check=True).stdout
        assert bridge in rules
        cli.api.remove_container(srv.id, force=True)
        cli.api.remove_network(net.id)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert bridge not in links
    deadline = time.monotonic() + 10  # the table is rebuilt just after the reply
    while table in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                  text=True).stdout:
        assert time.monotonic() < deadline, f"nft table {table} outlived the last network"
        time.sleep(0.1)
    left = d.state_dir / "networks"
    assert not list(left.glob("ipam/berth-net-*"))
    assert not list(left.glob("*.conflist"))


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def test_lazy_network_comes_back_after_crash(berthd_fn, e2e_images):
    """A network no container has joined has no bridge, before and after a crash; its first
    container after the restart makes it, and DNS answers on it. A network removed and made
    again at once under the same name, bridge name and subnet works too."""
    d = berthd_fn
    ref = e2e_images["busybox"].ref
    sock = f"unix://{d.docker_socket}"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.91.243.0/24")])
    opts = {"com.docker.network.bridge.name": "t16clazy0"}
    with contextlib.closing(docker.DockerClient(base_url=sock, timeout=60)) as cli:
        cli.images.pull(ref)
        net = cli.networks.create("lazy-net", driver="bridge", ipam=ipam, options=opts)
        assert "t16clazy0" not in _links()
    d.kill()
    d.start()
    with contextlib.closing(docker.DockerClient(base_url=sock, timeout=60)) as cli:
        assert "t16clazy0" not in _links()
        assert cli.networks.get("lazy-net").id == net.id
        srv = cli.containers.run(ref, ["sleep", "300"], name="lazy-srv", detach=True,
                                 network="lazy-net")
        assert "t16clazy0" in _links()
        assert _run(cli, ref, "lazy-net", "ping -c1 -W5 lazy-srv >/dev/null && echo ok") == \
            b"ok\n"
        cli.api.remove_container(srv.id, force=True)
        cli.api.remove_network(net.id)
        assert "t16clazy0" not in _links()
        # the same name, bridge and subnet again right away: made on its first joiner
        net = cli.networks.create("lazy-net", driver="bridge", ipam=ipam, options=opts)
        assert _run(cli, ref, "lazy-net", "echo ok") == b"ok\n"
        cli.api.remove_network(net.id)
    assert "t16clazy0" not in _links()
    left = d.state_dir / "networks"
    assert not list(left.glob("ipam/berth-net-*"))
    assert not list(left.glob("*.conflist"))
