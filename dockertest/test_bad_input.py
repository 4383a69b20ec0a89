"""Bad input: each answers 4xx with Docker's {"message": ...}, and nothing is left half-made.

Requests go over a raw unix-socket HTTP/1.1 connection (http.client), so the bodies are exactly
what the test says, not what docker-py would have cleaned up.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse

import pytest

from dockertest.harness import Daemon, wait_for


class UnixHTTP(http.client.HTTPConnection):
    """http.client over the daemon's unix socket."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _sock_path(dk: Daemon) -> str:
    return dk.host.removeprefix("unix://")


def request(dk: Daemon, method: str, path: str, body: bytes | None = None,
            ctype: str = "application/json") -> tuple[int, dict]:  # fmt: skip
    conn = UnixHTTP(_sock_path(dk))
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if body else {})
        res = conn.getresponse()
        data = res.read()
    finally:
        conn.close()
    try:
        return res.status, json.loads(data)
    except ValueError:
        return res.status, {"raw": data.decode(errors="replace")}


def _assert_4xx(status: int, body: dict, *codes: int) -> None:
    assert status in (codes or range(400, 500)), (status, body)
    assert isinstance(body.get("message"), str) and body["message"], body


def _assert_json_refused(dk: Daemon, status: int, body: dict) -> None:
    """A body that does not decode into the request type: 400 with the decoder's message.

    dockerd 20.10 differs: it answers these with 500 (same message); Berth answers 400, which
    is what the issue asks and what later dockerd releases do.
    """
    if dk.name == "dockerd":
        _assert_4xx(status, body, 400, 500)
    else:
        _assert_4xx(status, body, 400)


@pytest.fixture
def no_new_containers(dk: Daemon):
    before = dk.container_ids()
    yield
    assert dk.container_ids() == before, "a bad request left a container behind"


CREATE = "/v1.41/containers/create"


@pytest.mark.parametrize("body", [
    b"{", b"not json", b"[1, 2]", b'{"Image": "x",}', b"\xff\xfe", b'{"Image": 1e999999}',
], ids=["truncated", "text", "array", "trailing-comma", "binary", "huge-number"])  # fmt: skip
def test_malformed_json(dk: Daemon, no_new_containers: None, body: bytes) -> None:
    status, msg = request(dk, "POST", CREATE, body)
    _assert_json_refused(dk, status, msg)


@pytest.mark.parametrize("field,value", [
    ("Image", 5), ("Cmd", 5), ("Env", "A=1"), ("Tty", "yes"), ("Labels", ["a"]),
    ("HostConfig", "x"),
])  # fmt: skip
def test_wrong_types(dk: Daemon, no_new_containers: None, field: str, value: object) -> None:
    body = {"Image": dk.busybox, "Cmd": ["true"], field: value}
    status, msg = request(dk, "POST", CREATE, json.dumps(body).encode())
    _assert_json_refused(dk, status, msg)


def test_wrong_type_in_host_config(dk: Daemon, no_new_containers: None) -> None:
    body = {"Image": dk.busybox, "HostConfig": {"Memory": "lots", "PortBindings": 3}}
    status, msg = request(dk, "POST", CREATE, json.dumps(body).encode())
    _assert_json_refused(dk, status, msg)


def test_unknown_fields_are_ignored(dk: Daemon) -> None:
    """Newer clients send fields 1.41 does not know (the 28.x CLI does): dockerd ignores them,
    and so must Berth, or those clients break. The container is made and works."""
    body = {"Image": dk.busybox, "Cmd": ["true"], "NoSuchField": {"x": 1},
            "HostConfig": {"AlsoUnknown": True}}  # fmt: skip
    status, msg = request(dk, "POST", CREATE + "?name=dt-unknown", json.dumps(body).encode())
    assert status == 201, msg
    dk.api.remove_container(msg["Id"], force=True)


def test_huge_body(dk: Daemon, no_new_containers: None) -> None:
    """A 64 MiB create body is refused or rejected as a bad container, never a crash."""
    big = {"Image": dk.busybox, "Cmd": ["true"], "Env": ["X=" + "a" * (64 << 20)]}
    status, msg = request(dk, "POST", CREATE + "?name=dt-huge", json.dumps(big).encode())
    if status == 201:  # dockerd takes it (its limit is the kernel's, at start)
        dk.api.remove_container(msg["Id"], force=True)
    else:
        _assert_4xx(status, msg)
    assert dk.api.ping()


@pytest.mark.parametrize("name", ["-bad", "a b", "x/y", "é", "a" * 300 + "!"])
def test_invalid_names(dk: Daemon, no_new_containers: None, name: str) -> None:
    body = {"Image": dk.busybox, "Cmd": ["true"]}
    status, msg = request(dk, "POST", f"{CREATE}?name={urllib.parse.quote(name)}",
                          json.dumps(body).encode())  # fmt: skip
    _assert_4xx(status, msg, 400)
    assert "Invalid container name" in msg["message"] or "invalid" in msg["message"].lower()


@pytest.mark.parametrize("bindings", [
    {"8080/tcp": [{"HostPort": "99999"}]},
    {"8080/tcp": [{"HostPort": "abc"}]},
    {"notaport/tcp": [{"HostPort": "80"}]},
    {"8080/tcp": [{"HostPort": "-5"}]},
])  # fmt: skip
def test_invalid_port_specs(dk: Daemon, no_new_containers: None, bindings: dict) -> None:
    """Refused at create (dockerd) or at start (Berth may check earlier); both say why."""
    body = {"Image": dk.busybox, "Cmd": ["true"], "HostConfig": {"PortBindings": bindings}}
    status, msg = request(dk, "POST", CREATE, json.dumps(body).encode())
    if status == 201:
        s2, m2 = request(dk, "POST", f"/v1.41/containers/{msg['Id']}/start")
        dk.api.remove_container(msg["Id"], force=True)
        assert s2 >= 400 and m2.get("message"), (s2, m2)
    else:
        _assert_4xx(status, msg, 400)


def test_cli_invalid_port_spec(dk: Daemon, no_new_containers: None) -> None:
    res = dk.cli("run", "-d", "-p", "127.0.0.1:70000:80", dk.busybox, "true", check=False)
    assert res.returncode != 0 and "invalid" in res.stderr.lower()


def test_unknown_endpoint_404_names_it(dk: Daemon) -> None:
    status, msg = request(dk, "GET", "/v1.41/no/such/endpoint")
    assert status == 404
    # dockerd: "page not found"; Berth names the path, as the issue asks
    assert msg.get("message"), msg


def test_not_found_container(dk: Daemon) -> None:
    status, msg = request(dk, "POST", "/v1.41/containers/dt-nothing-here/start")
    _assert_4xx(status, msg, 404)
    assert "No such container" in msg["message"]


def test_bad_query_parameter(dk: Daemon) -> None:
    status, msg = request(dk, "GET", "/v1.41/containers/json?filters=%7Bnot-json")
    _assert_json_refused(dk, status, msg)


def test_hijack_closed_early(dk: Daemon) -> None:
    """An attach whose client vanishes right after the upgrade request leaves the daemon fine."""
    c = dk.api.create_container(dk.busybox, ["sleep", "300"], stdin_open=True)
    try:
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX)
            s.connect(_sock_path(dk))
            s.sendall(
                f"POST /v1.41/containers/{c['Id']}/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
                "Host: localhost\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n".encode()
            )
            s.close()
        assert dk.api.ping()
        dk.api.start(c["Id"])
        assert dk.api.inspect_container(c["Id"])["State"]["Running"]
    finally:
        dk.api.remove_container(c["Id"], force=True)


STREAMS = 1000  # what the issue asks: logs -f and attach, half each


def test_many_streams_disconnect_mid_stream(dk: Daemon) -> None:
    """STREAMS concurrent attach and logs -f streams are cut mid-stream; the daemon lives on
    and its fd count comes back."""
    c = dk.client.containers.run(dk.busybox, ["sh", "-c", "while true; do echo tick; "
                                 "sleep 0.1; done"], detach=True)  # fmt: skip
    fds_before = dk.open_fds()
    paths = [f"/v1.41/containers/{c.id}/logs?follow=1&stdout=1",
             f"/v1.41/containers/{c.id}/attach?stream=1&stdout=1"]  # fmt: skip
    got = []
    together = threading.Barrier(STREAMS, timeout=120)

    def one(i: int) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        try:
            s.connect(_sock_path(dk))
            path = paths[i % 2]
            hdr = "Upgrade: tcp\r\nConnection: Upgrade\r\n" if "attach" in path else ""
            method = "POST" if "attach" in path else "GET"
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{hdr}\r\n".encode())
            got.append(s.recv(4096)[:12])
            together.wait()  # every stream is open and flowing at once, then all are cut
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(got) == STREAMS and all(g.startswith(b"HTTP/1.1") for g in got), got[:5]
    assert dk.api.ping()
    c.remove(force=True)
    if fds_before is None:
        return
    # Every cut stream's fd is given back, with a little slack for the daemon's own pools.
    # dockerd 20.10 differs: it keeps one fd per cut attach stream (measured: 50 cut attaches
    # left 50 fds, still held after the container's removal); its cut logs streams are freed.
    # Berth must give back all of them.
    slack = 8 + (STREAMS // 2 if dk.name == "dockerd" else 0)
    wait_for(lambda: (dk.open_fds() or 0) <= fds_before + slack, 30,
             f"the daemon's fds back to {fds_before} (+{slack})")  # fmt: skip
