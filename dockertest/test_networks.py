"""User-defined networks (issue 16): create/inspect/list/remove, names and aliases over the
embedded DNS, isolation, connect/disconnect, prune, published ports, host/none, bad input and
leaks. Every test runs on berthd and on the private dockerd.

Subnets: berthd's user networks come from 10.91.0.0/16 (tests/fixtures/berthd.py), dockerd's
from 10.92.0.0/16 (`--default-address-pool`, tests/fixtures/dockerd.py); a test that names a
subnet picks one of those with no route yet. No test asks the embedded DNS for a name it does
not own: berthd runs with `docker.dns_forward = false` and dockerd's containers have
`--dns 127.0.0.1`, so nothing could leave the machine anyway.

Where dockerd differs: it runs with `--iptables=false --ip-forward=false`, so its bridges do
not forward at all and two of its networks are apart because nothing routes between them;
Berth's bridges forward (the bridge plugin's gateway mode) and its nft isolation table drops
bridge-to-bridge traffic, as dockerd's DOCKER-ISOLATION chains would with --iptables on.
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import docker
import pytest

from dockertest.harness import Daemon, wait_for
from runtime.network.isolation import table_name
from tests.fixtures._proc import free_port

POOL = {"berth": "10.91", "dockerd": "10.92"}
HTTPD = "mkdir -p /www && echo served-on-{net} > /www/index.html && exec httpd -f -p 8080 -h /www"


def _routes() -> str:
    return subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout


def free_subnet(dk: Daemon) -> str:
    """A /24 of the daemon's own pool, high enough that its allocator is not near it."""
    base = POOL.get(dk.name, "10.91")
    routes = _routes()
    for third in random.sample(range(200, 250), 50):
        if f"{base}.{third}." not in routes:
            return f"{base}.{third}.0/24"
    raise RuntimeError(f"no free {base}.N.0/24")


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def nets(dk: Daemon) -> Iterator[list[str]]:
    """Networks a test made (by id), removed afterwards (after the `dk` containers)."""
    made: list[str] = []
    yield made
    for cid in dk.container_ids():  # containers first: a network with endpoints stays
        with suppress(docker.errors.NotFound):
            dk.api.remove_container(cid, force=True, v=True)
    for net in made:
        with suppress(docker.errors.NotFound):
            dk.api.remove_network(net)


def _create(dk: Daemon, nets: list[str], name: str, **kw: object) -> str:
    net_id = str(dk.api.create_network(name, check_duplicate=True, **kw)["Id"])
    nets.append(net_id)
    return net_id


def _server(dk: Daemon, net: str, name: str, alias: str | None = None) -> str:
    args = ["run", "-d", "--name", name, "--network", net]
    if alias:
        args += ["--network-alias", alias]
    cid = dk.cli(*args, dk.busybox, "sh", "-c", HTTPD.format(net=net)).stdout.strip()
    wait_for(lambda: dk.api.inspect_container(cid)["State"]["Running"], 30, f"{name} running")
    # running is not listening: an exec right after could beat httpd's bind
    wait_for(lambda: b":8080 " in dk.api.exec_start(dk.api.exec_create(
        cid, ["netstat", "-ltn"])), 30, f"{name} listening")
    return cid


def _run(dk: Daemon, net: str, script: str) -> subprocess.CompletedProcess[str]:
    return dk.cli("run", "--rm", "--network", net, dk.busybox, "sh", "-c", script,
                  check=False, timeout=120)


def test_create_inspect_list_remove(dk: Daemon, nets: list[str]) -> None:
    name = _name("dt-net")
    subnet = free_subnet(dk)
    gateway = subnet.replace(".0/24", ".1")
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
        subnet=subnet, gateway=gateway, iprange=subnet.replace(".0/24", ".128/25"))])
    net_id = _create(dk, nets, name, driver="bridge", ipam=ipam, labels={"tier": "test"})
    info = dk.api.inspect_network(name)
    assert info["Id"] == net_id and info["Name"] == name and info["Driver"] == "bridge"
    assert info["Scope"] == "local" and info["Internal"] is False
    assert info["Labels"] == {"tier": "test"}
    cfg = info["IPAM"]["Config"][0]
    assert cfg["Subnet"] == subnet and cfg["Gateway"] == gateway
    assert dk.api.inspect_network(net_id[:12])["Id"] == net_id

    listed = {n["Name"]: n for n in dk.api.networks()}
    assert {"bridge", "host", "none", name} <= set(listed)
    assert listed["host"]["Driver"] == "host" and listed["none"]["Driver"] == "null"
    assert [n["Name"] for n in dk.api.networks(filters={"label": "tier=test"})] == [name]
    assert [n["Id"] for n in dk.api.networks(ids=[net_id[:10]])] == [net_id]
    custom = {n["Name"] for n in dk.api.networks(filters={"type": "custom"})}
    assert name in custom and "bridge" not in custom
    builtin = {n["Name"] for n in dk.api.networks(filters={"type": "builtin"})}
    assert {"bridge", "host", "none"} <= builtin and name not in builtin
    assert name in {n["Name"] for n in dk.api.networks(filters={"dangling": ["true"]})}

    cid = _server(dk, name, _name("dt-srv"))
    member = dk.api.inspect_network(name)["Containers"][cid]
    ip = member["IPv4Address"].split("/")[0]
    assert member["IPv4Address"].endswith("/24") and ip.startswith(subnet.rsplit(".", 2)[0])
    assert int(ip.rsplit(".", 1)[1]) >= 128  # from the IP range
    assert member["MacAddress"] and member["EndpointID"]
    settings = dk.api.inspect_container(cid)["NetworkSettings"]["Networks"][name]
    assert settings["IPAddress"] == ip and settings["NetworkID"] == net_id
    assert settings["Gateway"] == gateway and settings["MacAddress"] == member["MacAddress"]
    dangling = {n["Name"] for n in dk.api.networks(filters={"dangling": ["true"]})}
    # dockerd 20.10 still calls it dangling: its filter reads the list reply's Containers,
    # which a list leaves empty; Berth counts the attached containers
    assert (name in dangling) if dk.name == "dockerd" else (name not in dangling)

    dk.api.remove_container(cid, force=True)
    dk.api.remove_network(net_id)
    assert name not in {n["Name"] for n in dk.api.networks()}
    with pytest.raises(docker.errors.NotFound):
        dk.api.inspect_network(net_id)


def test_pool_subnet_when_none_given(dk: Daemon, nets: list[str]) -> None:
    """Without --subnet the network takes a /24 of the configured pool."""
    name = _name("dt-pool")
    _create(dk, nets, name)
    subnet = dk.api.inspect_network(name)["IPAM"]["Config"][0]["Subnet"]
    assert subnet.startswith(POOL[dk.name] + ".") and subnet.endswith(".0/24"), subnet


def test_name_and_alias_resolve_ping_and_http(dk: Daemon, nets: list[str]) -> None:
    """Two containers on one network reach each other by name, alias and short id."""
    net = _name("dt-app")
    _create(dk, nets, net)
    srv = _name("dt-web")
    cid = _server(dk, net, srv, alias="web-alias")
    script = (f"ping -c1 -W5 {srv} >/dev/null && echo ping-name-ok; "
              "ping -c1 -W5 web-alias >/dev/null && echo ping-alias-ok; "
              f"ping -c1 -W5 {cid[:12]} >/dev/null && echo ping-id-ok; "
              f"wget -qO- http://{srv}:8080/; wget -qO- http://web-alias:8080/")
    res = _run(dk, net, script)
    assert res.stdout.split() == ["ping-name-ok", "ping-alias-ok", "ping-id-ok",
                                  f"served-on-{net}", f"served-on-{net}"], res.stderr
    aliases = dk.api.inspect_container(cid)["NetworkSettings"]["Networks"][net]["Aliases"]
    assert "web-alias" in aliases and cid[:12] in aliases


def test_resolv_conf_points_at_embedded_dns(dk: Daemon, nets: list[str]) -> None:
    """dockerd: 127.0.0.11; Berth: the network's gateway. Both with ndots:0."""
    net = _name("dt-dns")
    _create(dk, nets, net)
    conf = _run(dk, net, "cat /etc/resolv.conf").stdout
    gateway = dk.api.inspect_network(net)["IPAM"]["Config"][0]["Gateway"]
    server = "127.0.0.11" if dk.name == "dockerd" else gateway
    assert f"nameserver {server}" in conf and "ndots:0" in conf, conf


def test_other_network_cannot_reach(dk: Daemon, nets: list[str]) -> None:
    """A container on another user network reaches neither the address nor the name."""
    a, b = _name("dt-a"), _name("dt-b")
    _create(dk, nets, a)
    _create(dk, nets, b)
    srv = _name("dt-iso")
    cid = _server(dk, a, srv)
    ip = dk.api.inspect_container(cid)["NetworkSettings"]["Networks"][a]["IPAddress"]
    same = _run(dk, a, f"ping -c1 -W3 {ip} >/dev/null && echo reached")
    assert same.stdout.strip() == "reached", same.stderr
    other = _run(dk, b, f"ping -c1 -W3 {ip} >/dev/null && echo reached; "
                        f"wget -T3 -qO- http://{ip}:8080/ && echo fetched; "
                        f"nslookup {srv} >/dev/null 2>&1 && echo resolved; echo done")
    assert other.stdout.split() == ["done"], other.stdout


def test_internal_network_has_no_way_out(dk: Daemon, nets: list[str]) -> None:
    """`internal`: peers by name, but no default route.

    dockerd differs: its containers keep a default route via the gateway and only its
    iptables rules (off in this suite) keep them in; Berth gives them no route out at all."""
    net = _name("dt-int")
    _create(dk, nets, net, internal=True)
    assert dk.api.inspect_network(net)["Internal"] is True
    srv = _name("dt-ins")
    _server(dk, net, srv)
    res = _run(dk, net, f"wget -qO- http://{srv}:8080/; ip route")
    assert res.stdout.splitlines()[0] == f"served-on-{net}", res.stderr
    assert ("default" in res.stdout) == (dk.name == "dockerd"), res.stdout


def test_published_port_on_user_network(dk: Daemon, nets: list[str]) -> None:
    net = _name("dt-pub")
    _create(dk, nets, net)
    port = free_port()
    dk.cli("run", "-d", "--name", _name("dt-pubsrv"), "--network", net,
           "-p", f"127.0.0.1:{port}:8080", dk.busybox, "sh", "-c", HTTPD.format(net=net))

    def fetch() -> bytes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
                return bytes(r.read())
        except OSError:
            return b""

    assert wait_for(fetch, 30, "the published port") == f"served-on-{net}\n".encode()


def test_connect_disconnect_with_alias(dk: Daemon, nets: list[str]) -> None:
    """A running container joins a second network as eth1 under an alias, then leaves it."""
    a, b = _name("dt-ca"), _name("dt-cb")
    _create(dk, nets, a)
    b_id = _create(dk, nets, b)
    srv = _name("dt-multi")
    cid = _server(dk, a, srv)
    listed = lambda: set(dk.api.containers(filters={"id": cid})[0]  # noqa: E731
                         ["NetworkSettings"]["Networks"])
    assert listed() == {a}
    dk.api.connect_container_to_network(cid, b, aliases=["joined"])
    info = dk.api.inspect_container(cid)["NetworkSettings"]["Networks"]
    assert set(info) == {a, b} and "joined" in info[b]["Aliases"]
    assert listed() == {a, b}  # the list's row follows the pod's attachments
    assert cid in dk.api.inspect_network(b_id)["Containers"]
    links = dk.api.exec_start(dk.api.exec_create(cid, ["ls", "/sys/class/net"])).split()
    assert sorted(links) == [b"eth0", b"eth1", b"lo"]
    res = _run(dk, b, "wget -qO- http://joined:8080/")
    assert res.stdout == f"served-on-{a}\n", res.stderr
    peer = _name("dt-peer")  # on b only: the multi-homed container resolves it through a's DNS
    _server(dk, b, peer)
    both = dk.api.exec_start(dk.api.exec_create(cid, ["wget", "-qO-", f"http://{peer}:8080/"]))
    assert both == f"served-on-{b}\n".encode()
    with pytest.raises(docker.errors.APIError) as exc:  # already there
        dk.api.connect_container_to_network(cid, b)
    assert 400 <= exc.value.status_code < 500

    dk.api.disconnect_container_from_network(cid, b)
    assert set(dk.api.inspect_container(cid)["NetworkSettings"]["Networks"]) == {a}
    assert listed() == {a}
    assert cid not in dk.api.inspect_network(b_id)["Containers"]
    links = dk.api.exec_start(dk.api.exec_create(cid, ["ls", "/sys/class/net"])).split()
    assert sorted(links) == [b"eth0", b"lo"]
    gone = _run(dk, b, "nslookup joined >/dev/null 2>&1 && echo resolved; echo done")
    assert gone.stdout.split() == ["done"]
    with pytest.raises(docker.errors.APIError) as exc:  # not connected any more
        dk.api.disconnect_container_from_network(cid, b)
    # dockerd answers 500 ("container ... is not connected to network ..."); Berth 409
    assert exc.value.status_code == (500 if dk.name == "dockerd" else 409)


def test_static_address(dk: Daemon, nets: list[str]) -> None:
    """`--ip` on a network with a user-given subnet; refused on a pool subnet and when taken."""
    net = _name("dt-ip")
    subnet = free_subnet(dk)
    _create(dk, nets, net, ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=subnet)]))
    ip = subnet.replace(".0/24", ".77")
    cid = dk.cli("run", "-d", "--network", net, "--ip", ip, dk.busybox,
                 "sleep", "300").stdout.strip()
    assert dk.api.inspect_container(cid)["NetworkSettings"]["Networks"][net]["IPAddress"] == ip
    got = _run(dk, net, f"ping -c1 -W5 {ip} >/dev/null && echo reached").stdout
    assert got == "reached\n"
    again = dk.cli("run", "--rm", "--network", net, "--ip", ip, dk.busybox, "true", check=False)
    assert again.returncode != 0 and "in use" in again.stderr, again.stderr
    pooled = _name("dt-ip-pool")
    _create(dk, nets, pooled)
    other = dk.cli("run", "--rm", "--network", pooled, "--ip", "10.91.3.3", dk.busybox, "true",
                   check=False)
    assert other.returncode != 0 and "user configured subnets" in other.stderr, other.stderr


def test_prune_removes_only_unused(dk: Daemon, nets: list[str]) -> None:
    used, idle = _name("dt-used"), _name("dt-idle")
    _create(dk, nets, used, labels={"prune-test": "1"})
    _create(dk, nets, idle, labels={"prune-test": "1"})
    _server(dk, used, _name("dt-keep"))
    gone = dk.api.prune_networks(filters={"label": "prune-test"})["NetworksDeleted"]
    assert gone == [idle]
    assert {used} == {n["Name"] for n in dk.api.networks(filters={"label": "prune-test"})}


def test_host_sees_host_interfaces_none_only_loopback(dk: Daemon) -> None:
    mac = Path("/sys/class/net/eth0/address").read_text().strip()
    host = dk.output(["cat", "/sys/class/net/eth0/address"], network_mode="host").decode()
    assert host.strip() == mac
    none = dk.output(["ls", "/sys/class/net"], network_mode="none").decode()
    assert none.split() == ["lo"]


def _status(call: object) -> tuple[int, str]:
    try:
        call()  # type: ignore[operator]
    except docker.errors.APIError as exc:
        return exc.status_code, str(exc.explanation)
    raise AssertionError("the daemon accepted it")


def test_bad_input_creates_nothing(dk: Daemon, nets: list[str]) -> None:
    """4xx with a message, and no network left behind.

    Statuses as dockerd 20.10 gives them: overlap 403, name taken 409, active endpoints 403,
    a pre-defined network 403, an unknown driver 404. dockerd differs on a bad driver option
    value and an invalid subnet: it answers 500 for both (the ParseBool / ParseCIDR error
    passed up as it is); Berth answers 400, the request being at fault.
    """
    name = _name("dt-bad")
    subnet = free_subnet(dk)
    _create(dk, nets, name, ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=subnet)]))
    before = {n["Id"] for n in dk.api.networks()}
    inner = subnet.replace(".0/24", ".0/25")
    cases = {
        "overlap": lambda: dk.api.create_network(_name("dt-ov"), ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=inner)])),
        "taken": lambda: dk.api.create_network(name, check_duplicate=True),
        "option": lambda: dk.api.create_network(
            _name("dt-opt"), options={"com.docker.network.bridge.enable_icc": "maybe"}),
        "subnet": lambda: dk.api.create_network(_name("dt-sub"), ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet="10.91.300.0/24")])),
        "driver": lambda: dk.api.create_network(_name("dt-drv"), driver="no-such-driver"),
        "builtin": lambda: dk.api.remove_network("bridge"),
    }
    seen = {what: _status(call) for what, call in cases.items()}
    if dk.name == "dockerd":
        assert seen.pop("option")[0] == seen.pop("subnet")[0] == 500
    else:
        assert seen["option"][0] == seen["subnet"][0] == 400
    for what, (code, message) in seen.items():
        assert 400 <= code < 500 and message, (what, code, message)
    assert seen["taken"][0] == 409 and seen["builtin"][0] == 403
    assert seen["overlap"][0] == 403 and seen["driver"][0] == 404
    assert {n["Id"] for n in dk.api.networks()} == before

    _server(dk, name, _name("dt-att"))
    code, message = _status(lambda: dk.api.remove_network(name))
    assert code == 403 and "active endpoints" in message
    assert name in {n["Name"] for n in dk.api.networks()}
    hc = dk.api.create_host_config(network_mode="dt-no-such-net")
    if dk.name == "dockerd":  # dockerd creates the container and finds no network at start
        c = dk.api.create_container(dk.busybox, ["true"], host_config=hc)
        with pytest.raises(docker.errors.NotFound):
            dk.api.start(c)
    else:  # Berth joins the network at create, so it refuses then, creating nothing
        with pytest.raises(docker.errors.NotFound):
            dk.api.create_container(dk.busybox, ["true"], host_config=hc)


def test_removal_leaves_nothing(dk: Daemon, nets: list[str], request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    """No bridge, veth, firewall rule or IP lease outlives the network."""
    bridge = f"dt{secrets.token_hex(4)}"
    name = _name("dt-leak")
    net_id = _create(dk, nets, name, options={"com.docker.network.bridge.name": bridge})
    cid = _server(dk, name, _name("dt-leaksrv"))
    port_cid = dk.cli("run", "-d", "--network", name, "-p", f"127.0.0.1:{free_port()}:8080",
                      dk.busybox, "sleep", "300").stdout.strip()
    ports = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                           text=True, check=True).stdout
    assert ports.count("veth") == 2, ports
    state = None
    if dk.name == "berth":
        state = Path(request.getfixturevalue("berthd").config["state_dir"])
        leases = state / "networks" / "ipam" / f"berth-net-{net_id[:12]}"
        assert len([p for p in leases.iterdir() if p.name[0].isdigit()]) == 2
    dk.api.remove_container(cid, force=True)
    dk.api.remove_container(port_cid, force=True)
    dk.api.remove_network(net_id)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert bridge not in links
    assert not any(f"master {bridge}" in line for line in links.splitlines())
    if state is not None:
        assert not (state / "networks" / "ipam" / f"berth-net-{net_id[:12]}").exists()
        assert not (state / "networks" / f"{net_id}.conflist").exists()

        def ruleset() -> str:
            return subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                                  text=True, check=True).stdout

        assert f"berth-net-{net_id[:12]}" not in ruleset()  # portmap/masquerade tags
        # the isolation table is rebuilt just after the reply (off the request path)
        wait_for(lambda: bridge not in ruleset(), 10, "the isolation rules to go")
        tables = [t["table"]["name"] for t in json.loads(ruleset())["nftables"]
                  if "table" in t]
        assert table_name(str(state)) not in tables
