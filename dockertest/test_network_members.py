"""Members of a user network reach each other by name, and the gateway, the moment a start has
returned, and keep doing so while other members come and go (issue 16).

What this guards: `docker-compose up -d` of compose_app once left `writer` unable to resolve
`web` for seconds ("bad address"), while `gate` could. Cause: a Linux bridge whose MAC was not
set takes its lowest port's, so a later member's veth (or a leaving one's) moved the gateway's
MAC, and a member that had already cached it sent its DNS queries to an address that was no
longer the host's until its neighbour entry expired. Both daemons give their bridges a MAC of
their own; the test checks that, then resolves and pings after every join and every leave.
Runs on berthd and on the private dockerd (its DNS is 127.0.0.11 in the container, Berth's the
gateway; the gateway ping covers both).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import suppress

import docker
import pytest

from dockertest.harness import Daemon

MEMBERS = 6  # joins after the first: the bridge's MAC would move in 6 of 7 runs


@pytest.fixture
def net(dk: Daemon) -> Iterator[tuple[str, str]]:
    """A pool-addressed user network (name, id), removed after the test's containers."""
    name = f"dt-members-{secrets.token_hex(3)}"
    net_id = str(dk.api.create_network(name, check_duplicate=True)["Id"])
    yield name, net_id
    for cid in dk.container_ids():
        with suppress(docker.errors.NotFound):
            dk.api.remove_container(cid, force=True)
    with suppress(docker.errors.NotFound):
        dk.api.remove_network(net_id)


def _bridge_mac(net_id: str) -> str:
    """Both daemons name a network's bridge br-<12 hex of its id>."""
    out = subprocess.run(["ip", "-j", "link", "show", f"br-{net_id[:12]}"], capture_output=True,
                         text=True, check=True).stdout
    return str(json.loads(out)[0]["address"])


def _reach(dk: Daemon, client: str, target: str) -> None:
    """From `client`: `target` resolves and answers (both through busybox's resolver)."""
    res = dk.cli("exec", client, "ping", "-c1", "-W3", target, check=False, timeout=60)
    assert res.returncode == 0, f"{client} -> {target}: {res.stdout} {res.stderr}"


def test_members_reach_each_other_at_once_as_members_come_and_go(
        dk: Daemon, net: tuple[str, str]) -> None:
    name, net_id = net
    first = f"{name}-first"
    dk.cli("run", "-d", "--name", first, "--network", name, dk.busybox, "sleep", "300")
    gateway = dk.api.inspect_network(net_id)["IPAM"]["Config"][0]["Gateway"]
    _reach(dk, first, gateway)  # the first member has the gateway's MAC in its neighbour cache
    mac = _bridge_mac(net_id)
    members = [first]
    for i in range(MEMBERS):
        member = f"{name}-{i}"
        dk.cli("run", "-d", "--name", member, "--network", name, dk.busybox, "sleep", "300")
        for other in members:  # right after the start returned, no wait: every older member
            _reach(dk, other, member)
        _reach(dk, member, first)
        members.append(member)
        assert _bridge_mac(net_id) == mac, f"the bridge's MAC moved when {member} joined"
    for member in members[1:-1]:
        dk.api.remove_container(member, force=True)
        _reach(dk, first, members[-1])
        _reach(dk, members[-1], gateway)
        assert _bridge_mac(net_id) == mac, f"the bridge's MAC moved when {member} left"
