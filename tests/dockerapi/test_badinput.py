"""Bad requests get Docker's JSON error with a 4xx status, and leave nothing behind."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(berthd, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = UnixHTTP(str(berthd.docker_socket))
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data.startswith(b"{") else {}
    finally:
        conn.close()


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "invalid JSON"),
    (b"[]", 400, "JSON object"),
    (b'{"Image": 5}', 400, "Image"),
    (b'{"Image": "x", "Env": "A=1"}', 400, "Env"),
    (b'{"Image": "x", "Cmd": [1, 2]}', 400, "Cmd"),
    (b'{"Image": "x", "HostConfig": {"PortBindings": {"99999/tcp": []}}}', 400, "port"),
    (b'{"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}}',
     400, "port"),
    (b'{"Image": "x", "HostConfig": {"Memory": -1}}', 400, "Memory"),
    (b'{"Image": "x", "HostConfig": {"NetworkMode": "container:abc"}}', 400, "network"),
    (b'{"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}', 400,
     "network endpoints"),
    (b'{"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["a"]}}}}',
     400, "alias"),
    (b'{"Image": "x", "HostConfig": {"NetworkMode": "n"}, "NetworkingConfig": '
     b'{"EndpointsConfig": {"n": {"IPAMConfig": {"IPv6Address": "fd00::9"}}}}}', 400, "IPv6"),
    (b'{"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": '
     b'{"IPv4Address": "10.0.0.9"}}}}}', 400, "user defined networks"),
    (b'{"Image": "x", "HostConfig": {"Binds": ["rel/dir:/x"]}}', 400, "invalid characters"),
    (b'{"Image": "x", "StopSignal": "SIGNOPE"}', 400, "signal"),
    (b'{"Image": "127.0.0.1:1/nothing/here:1"}', 404, "No such image"),
])
def test_create_refusals(berthd, dclient, body, status, words):
    before = len(dclient.containers.list(all=True))
    got, reply = call(berthd, "POST", "/v1.41/containers/create", body)
    assert got == status, reply
    assert words.lower() in reply["message"].lower()
    assert len(dclient.containers.list(all=True)) == before


def test_invalid_name(berthd, busybox):
    got, reply = call(berthd, "POST", "/containers/create?name=bad%20name",
                      json.dumps({"Image": busybox}).encode())
    assert got == 400 and "Invalid container name" in reply["message"]


def test_unknown_endpoint_named(berthd):
    got, reply = call(berthd, "GET", "/v1.41/no/such/thing")
    assert got == 404 and "/v1.41/no/such/thing" in reply["message"]


def test_missing_container(berthd):
    got, reply = call(berthd, "POST", "/containers/doesnotexist/start")
    assert got == 404 and "No such container" in reply["message"]


def test_huge_body_refused(berthd):
    got, reply = call(berthd, "POST", "/containers/create", b'{"Image": "' + b"a" * (2 << 20)
                      + b'"}')
    assert got == 413 and reply["message"]


def test_too_new_api_version(berthd):
    got, reply = call(berthd, "GET", "/v1.99/version")
    assert got == 400 and "too new" in reply["message"]


def test_failed_create_leaves_nothing(berthd, dclient, busybox):
    """A create that fails after its pod is up (unknown user) rolls the pod back too."""
    pods = berthd.state_dir / "pods"
    before_pods = set(pods.iterdir()) if pods.exists() else set()
    before = len(dclient.containers.list(all=True))
    got, reply = call(berthd, "POST", "/containers/create?name=nouser",
                      json.dumps({"Image": busybox, "User": "nosuchuser"}).encode())
    assert got == 400 and "nosuchuser" in reply["message"]
    assert len(dclient.containers.list(all=True)) == before
    assert (set(pods.iterdir()) if pods.exists() else set()) == before_pods
    got, _ = call(berthd, "GET", "/containers/nouser/json")
    assert got == 404


def test_connection_limit(tmp_path, registry):
    """Past docker.max_connections a client gets one 503 and the rest keep being served."""
    from tests.fixtures.berthd import run_berthd

    with run_berthd(tmp_path / "b", registry={"insecure": [registry.host]},
                    docker={"max_connections": 4}) as d:
        held = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.docker_socket))
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(30)
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            held.append(s)
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(str(d.docker_socket))
        extra.settimeout(30)
        assert extra.recv(64).startswith(b"HTTP/1.1 503")
        extra.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert call(d, "GET", "/_ping")[0] == 200
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.2)


@pytest.mark.parametrize("body, status, words", [
    (b"[]", 400, "JSON object"),
    (b'{}', 400, "name is required"),
    (b'{"Name": "a/b"}', 400, "invalid network name"),
    (b'{"Name": ".."}', 400, "invalid network name"),
    (b'{"Name": "bridge"}', 403, "pre-defined"),
    (b'{"Name": "n1", "Driver": "overlay"}', 400, "overlay"),
    (b'{"Name": "n1", "Driver": 7}', 400, "Driver"),
    (b'{"Name": "n1", "Labels": {"a": 1}}', 400, "Labels"),
    (b'{"Name": "n1", "Options": {"com.docker.network.bridge.name": "../x"}}', 400, "bridge"),
    (b'{"Name": "n1", "Options": {"no.such.option": "1"}}', 400, "driver option"),
    # a host interface is never taken over as a network's bridge (nor deleted with it)
    (b'{"Name": "n1", "Options": {"com.docker.network.bridge.name": "lo"}}', 409,
     "already exists"),
    (b'{"Name": "n1", "EnableIPv6": true}', 400, "IPv6"),
    (b'{"Name": "n1", "IPAM": {"Config": [{"Subnet": "fd00::/64"}]}}', 400, "IPv6"),
    (b'{"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.91.251.0/24", '
     b'"Gateway": "10.91.9.1"}]}}', 400, "gateway"),
    (b'{"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.91.251.0/24", '
     b'"IPRange": "10.91.9.0/25"}]}}', 400, "range"),
    (b'{"Name": "n1", "IPAM": {"Config": [{"Gateway": "10.91.9.1"}]}}', 400, "subnet"),
    (b'{"Name": "n1", "IPAM": {"Config": "x"}}', 400, "IPAM.Config"),
    (b'{"Name": "n1", "IPAM": {"Driver": "weird"}}', 404, "plugin"),
])
def test_network_create_refusals(berthd, dclient, body, status, words):
    before = sorted(n.id for n in dclient.networks.list())
    got, reply = call(berthd, "POST", "/v1.41/networks/create", body)
    assert got == status, reply
    assert words.lower() in reply["message"].lower()
    assert sorted(n.id for n in dclient.networks.list()) == before
