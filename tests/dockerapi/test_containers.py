"""docker-py runs busybox on berthd: output, exit codes, ports, logs, exec, stop, rm."""

from __future__ import annotations

import time
import urllib.request

import docker
import pytest

from proto import api_pb2 as pb


def test_ping_version_info(dclient):
    assert dclient.ping() is True
    v = dclient.version()
    assert v["ApiVersion"] == "1.41" and v["Os"] == "linux"
    assert dclient.info()["OSType"] == "linux"


def test_run_to_completion_with_output(dclient, busybox, cleanup):
    cleanup.append("completes")
    out = dclient.containers.run(busybox, ["sh", "-c", "echo hello; echo oops >&2"],
                                 name="completes", stderr=True)
    assert out == b"hello\noops\n" or sorted(out.splitlines()) == [b"hello", b"oops"]
    c = dclient.containers.get("completes")
    assert c.attrs["State"]["Status"] == "exited" and c.attrs["State"]["ExitCode"] == 0
    assert c.name == "completes" and c.attrs["Name"] == "/completes"


def test_exit_code_propagates(dclient, busybox, cleanup):
    cleanup.append("fails")
    with pytest.raises(docker.errors.ContainerError) as err:
        dclient.containers.run(busybox, ["sh", "-c", "exit 3"], name="fails")
    assert err.value.exit_status == 3
    assert dclient.containers.get("fails").wait()["StatusCode"] == 3


def test_env_workdir_user(dclient, busybox, cleanup):
    cleanup.append("envs")
    out = dclient.containers.run(busybox, ["sh", "-c", "echo $GREETING; pwd; id -u"],
                                 name="envs", environment={"GREETING": "hi"},
                                 working_dir="/tmp", user="1000")
    assert out.split() == [b"hi", b"/tmp", b"1000"]


def test_detached_published_port_logs_exec_stop_rm(dclient, busybox, cleanup, berthd):
    cleanup.append("web")
    script = ("mkdir /www && echo served > /www/index.html && echo up && "
              "exec httpd -f -p 8080 -h /www")
    c = dclient.containers.run(busybox, ["sh", "-c", script], name="web", detach=True,
                               ports={"8080/tcp": ("127.0.0.1", None)})
    c.reload()
    assert c.status == "running"
    binding = c.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    port = int(binding["HostPort"])
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert r.read() == b"served\n"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert c.logs() == b"up\n"
    assert c.logs(timestamps=True).split(b" ", 1)[1] == b"up\n"
    code, out = c.exec_run(["sh", "-c", "echo from-exec; exit 4"])
    assert (code, out) == (4, b"from-exec\n")
    # kubelet never sees Docker's containers
    listed = berthd.client().runtime.ListContainers(pb.ListContainersRequest()).containers
    assert c.id not in {x.id for x in listed}
    assert c.id in {x.id for x in dclient.containers.list()}
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        dclient.containers.get("web")


def test_stop_timeout_kills_a_process_that_ignores_sigterm(dclient, busybox, cleanup):
    cleanup.append("stubborn")
    c = dclient.containers.run(busybox, ["sh", "-c", "trap '' TERM; echo ready; "
                                         "while true; do sleep 1; done"],
                               name="stubborn", detach=True)
    for _ in range(100):
        if c.logs() == b"ready\n":
            break
        time.sleep(0.1)
    started = time.monotonic()
    c.stop(timeout=1)
    assert time.monotonic() - started < 10
    assert c.wait()["StatusCode"] == 137


def test_names_and_prefixes(dclient, busybox, cleanup):
    cleanup += ["named"]
    c = dclient.containers.create(busybox, ["true"], name="named")
    assert dclient.containers.get(c.id[:12]).id == c.id
    assert dclient.containers.get("/named").id == c.id
    with pytest.raises(docker.errors.APIError) as err:
        dclient.containers.create(busybox, ["true"], name="named")
    assert err.value.status_code == 409 and "already in use" in str(err.value)
    c.rename("renamed")
    cleanup.append("renamed")
    assert dclient.containers.get("renamed").id == c.id
    with pytest.raises(docker.errors.NotFound):
        dclient.containers.get("named")


def test_list_filters(dclient, busybox, cleanup):
    cleanup += ["lf-a", "lf-b"]
    dclient.containers.create(busybox, ["true"], name="lf-a", labels={"team": "a"})
    dclient.containers.create(busybox, ["true"], name="lf-b", labels={"team": "b"})
    names = {c.name for c in dclient.containers.list(all=True, filters={"label": "team=a"})}
    assert names == {"lf-a"}
    assert {c.name for c in dclient.containers.list(all=True, filters={"name": "lf-"})} \
        == {"lf-a", "lf-b"}
    assert "lf-a" not in {c.name for c in dclient.containers.list()}  # not running
    assert len(dclient.containers.list(all=True, filters={"status": "created",
                                                          "name": "lf-"})) == 2
