"""Logs, exec and events in more detail, other network modes and binds, auth pulls, and many
streams that hang up early without leaking anything in berthd."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from pathlib import Path

import docker
import pytest

from tests.fixtures.waits import until


def test_logs_tail_since_follow(dclient, busybox, cleanup):
    cleanup.append("chatty")
    c = dclient.containers.run(busybox, ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; "
                                         "done; sleep 1; echo late; echo err >&2"],
                               name="chatty", detach=True)
    follow = list(c.logs(stream=True, follow=True))  # ends when the container exits
    assert b"".join(follow) == b"line1\nline2\nline3\nline4\nline5\nlate\nerr\n"
    assert c.logs(tail=2) == b"late\nerr\n"
    assert c.logs(stdout=False, stderr=True) == b"err\n"
    stamped = c.logs(timestamps=True).splitlines()
    late = next(line for line in stamped if line.endswith(b" late"))
    since = time.mktime(time.strptime(late.split(b".")[0].decode(), "%Y-%m-%dT%H:%M:%S")) \
        - time.timezone + 0.0
    assert b"line1" not in c.logs(since=int(since) + 1)


def test_exec_inspect_detach_and_tty(dclient, busybox, cleanup):
    cleanup.append("exechost")
    c = dclient.containers.run(busybox, ["sleep", "300"], name="exechost", detach=True)
    ex = dclient.api.exec_create(c.id, ["sh", "-c", "echo hi > /tmp/mark; exit 3"])
    dclient.api.exec_start(ex["Id"], detach=True)
    info = until(lambda: (i := dclient.api.exec_inspect(ex["Id"]))["ExitCode"] is not None
                  and i)
    assert info["ExitCode"] == 3 and info["Running"] is False
    assert c.exec_run(["cat", "/tmp/mark"]).output == b"hi\n"
    # isatty, not tty(1): the monitor's pty lives in the host's devpts, which the container's
    # own /dev/pts does not show (runc allocates it inside); ttyname fails there
    code, out = c.exec_run(["sh", "-c", "test -t 0 && test -t 1 && echo tty"], tty=True)
    assert (code, out) == (0, b"tty\r\n")
    code, out = c.exec_run(["pwd"], workdir="/home/berth", user="berth")
    assert (code, out) == (0, b"/home/berth\n")
    with pytest.raises(docker.errors.NotFound):
        dclient.api.exec_inspect("0" * 64)
    c.stop(timeout=0)
    with pytest.raises(docker.errors.APIError) as err:
        dclient.api.exec_create(c.id, ["true"])
    assert err.value.status_code == 409


def test_events_stream_live(dclient, busybox, cleanup):
    cleanup.append("live")
    stream = dclient.events(decode=True, filters={"type": "container", "event": "die"})
    got: list[dict] = []
    reader = threading.Thread(target=lambda: got.append(next(stream)), daemon=True)
    reader.start()  # no wait: berthd subscribes before its 200, which events() has seen
    dclient.containers.run(busybox, ["true"], name="live")
    reader.join(30)
    stream.close()
    assert got and got[0]["Actor"]["Attributes"]["name"] == "live"
    assert got[0]["Actor"]["Attributes"]["exitCode"] == "0"


def test_network_modes_and_binds(berthd, dclient, busybox, cleanup, tmp_path: Path):
    cleanup += ["hostnet", "nonet", "binds"]
    out = dclient.containers.run(busybox, ["sh", "-c", "ls /sys/class/net"], name="nonet",
                                 network_mode="none")
    assert out.split() == [b"lo"]
    out = dclient.containers.run(busybox, ["ls", "/sys/class/net"], name="hostnet",
                                 network_mode="host")
    # the host's links (others come and go meanwhile): our fixture's bridge is one of them
    assert berthd.bridge.encode() in out.split()
    (tmp_path / "in.txt").write_text("from host\n")
    with pytest.raises(docker.errors.ContainerError):  # read-only: the touch fails
        dclient.containers.run(busybox, ["sh", "-c", "cat /data/in.txt; touch /data/x"],
                               name="binds", volumes={str(tmp_path): {"bind": "/data",
                                                                      "mode": "ro"}})
    assert dclient.containers.get("binds").logs(stderr=False) == b"from host\n"
    assert not (tmp_path / "x").exists()


def test_pull_with_registry_auth(berthd, auth_e2e_images, auth_registry):
    cli = docker.APIClient(base_url=f"unix://{berthd.docker_socket}", timeout=120)
    ref = auth_e2e_images["busybox"].ref
    with pytest.raises(docker.errors.APIError) as err:
        cli.pull(ref)
    assert err.value.status_code in (401, 403, 404, 500)
    cli.pull(ref, auth_config={"username": auth_registry.username,
                               "password": auth_registry.password})
    assert ref in {t for i in cli.images() for t in i["RepoTags"] or []}
    cli.remove_image(ref)
    cli.close()


def test_system_df(dclient, busybox):
    df = dclient.df()
    assert any(busybox in (i["RepoTags"] or []) for i in df["Images"])
    assert df["Volumes"] == [] and isinstance(df["Containers"], list)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_streams_that_hang_up_leak_nothing(berthd, dclient, busybox, cleanup):
    """200 follow-logs and attach streams, each dropped mid-stream, then a hijack whose
    client closes before the headers; berthd keeps its fd count and keeps answering."""
    cleanup.append("noisy")
    c = dclient.containers.run(busybox, ["sh", "-c", "while true; do echo tick; sleep 0.05; "
                                         "done"], name="noisy", detach=True)
    pid = berthd.proc.pid
    dclient.ping()
    before = _fds(pid)
    reqs = [f"GET /containers/{c.id}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            f"POST /containers/{c.id}/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: x\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"]
    socks = []
    for i in range(200):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(berthd.docker_socket))
        s.sendall(reqs[i % 2].encode())
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        assert s.recv(64)  # answered, streaming
        s.close()
    early = socket.socket(socket.AF_UNIX)
    early.connect(str(berthd.docker_socket))
    early.sendall(reqs[1].encode()[:40])
    early.close()
    until(lambda: _fds(pid) <= before + 2, timeout=60)
    assert dclient.ping()
    c.stop(timeout=0)


def test_registry_auth_header_garbage(berthd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(berthd.docker_socket))
    s.sendall(b"POST /images/create?fromImage=127.0.0.1:1/x&tag=1 HTTP/1.1\r\nHost: x\r\n"
              b"X-Registry-Auth: !!!notbase64\r\nContent-Length: 0\r\n\r\n")
    s.settimeout(30)
    head, _, body = s.recv(65536).partition(b"\r\n\r\n")
    s.close()
    assert head.startswith(b"HTTP/1.1 400") and b"X-Registry-Auth" in body
    assert json.loads(body.split(b"\r\n")[-1] or body)["message"]
    assert base64  # the header is base64url JSON when well-formed
