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
