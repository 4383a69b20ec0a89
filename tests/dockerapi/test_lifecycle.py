"""Lifecycle verbs beyond run: kill, restart, wait conditions, pause, top, stats, events,
restart policy, attach with stdin over docker-py's socket."""

from __future__ import annotations

import time

import docker
import pytest

from tests.fixtures.waits import until


def test_kill_signal_and_restart(dclient, busybox, cleanup):
    cleanup.append("killme")
    c = dclient.containers.run(busybox, ["sh", "-c", "trap 'exit 42' USR1; echo up; "
                                         "while true; do sleep 0.1; done"],
                               name="killme", detach=True)
    until(lambda: c.logs() == b"up\n")
    c.kill(signal="SIGUSR1")  # pid 1 only dies of a signal it handles
    assert c.wait(timeout=30)["StatusCode"] == 42
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    with pytest.raises(docker.errors.APIError) as err:
        c.remove()
    assert err.value.status_code == 409
    c.remove(force=True)


def test_pause_top_stats(dclient, busybox, cleanup):
    cleanup.append("busy")
    c = dclient.containers.run(busybox, ["sleep", "300"], name="busy", detach=True,
                               mem_limit="64m", pids_limit=50, nano_cpus=500_000_000)
    top = c.top()
    assert any("sleep 300" in row[-1] for row in top["Processes"])
    s = c.stats(stream=False)
    assert s["memory_stats"]["limit"] == 64 << 20 and s["pids_stats"]["limit"] == 50
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] >= s["precpu_stats"]["cpu_usage"][
        "total_usage"]
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.reload()
    assert c.status == "running"
    c.pause()
    c.stop(timeout=0)  # a paused container is thawed to be stopped
    c.reload()
    assert c.status == "exited"


def test_wait_conditions(dclient, busybox, cleanup):
    cleanup.append("waiter")
    c = dclient.containers.create(busybox, ["sh", "-c", "exit 5"], name="waiter")
    assert dclient.api.wait(c.id, condition="not-running")["StatusCode"] == 0  # created
    c.start()
    assert c.wait(condition="not-running")["StatusCode"] == 5


def test_restart_policy_on_failure(dclient, busybox, cleanup):
    cleanup.append("flaky")
    c = dclient.containers.run(busybox, ["sh", "-c", "exit 1"], name="flaky", detach=True,
                               restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    until(lambda: dclient.containers.get("flaky").attrs["RestartCount"] == 2)
    time.sleep(1)
    c.reload()
    assert c.attrs["RestartCount"] == 2 and c.status == "exited"


def test_events_report_lifecycle(dclient, busybox, cleanup):
    cleanup.append("eventful")
    since = time.time() - 1
    c = dclient.containers.run(busybox, ["true"], name="eventful", detach=True)
    c.wait()
    events = dclient.events(since=since, until=time.time() + 1, decode=True,
                            filters={"container": c.id})
    actions = [e["Action"] for e in events]
    assert actions[:3] == ["create", "start", "die"], actions


def test_attach_socket_stdin(dclient, busybox, cleanup):
    cleanup.append("catty")
    c = dclient.containers.create(busybox, ["cat"], name="catty", stdin_open=True)
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    c.start()
    raw = sock._sock
    raw.sendall(b"echo me\n")
    data = b""
    deadline = time.monotonic() + 20
    while b"echo me" not in data and time.monotonic() < deadline:
        data += raw.recv(4096)
    assert data[8:] == b"echo me\n" and data[0] == 1  # multiplexed: stdout frame
    raw.close()
    c.stop(timeout=0)


def test_health_checks(dclient, busybox, cleanup):
    cleanup += ["healthy", "sick"]
    ms = 1_000_000
    good = dclient.containers.run(busybox, ["sleep", "300"], name="healthy", detach=True,
                                  healthcheck={"Test": ["CMD-SHELL", "test -d /tmp"],
                                               "Interval": 200 * ms, "Retries": 2})
    bad = dclient.containers.run(busybox, ["sleep", "300"], name="sick", detach=True,
                                 healthcheck={"Test": ["CMD", "false"], "Interval": 200 * ms,
                                              "Timeout": 2000 * ms, "Retries": 2})
    since = time.time() - 1
    until(lambda: dclient.api.inspect_container(good.id)["State"]["Health"]["Status"]
           == "healthy")
    health = until(lambda: (h := dclient.api.inspect_container(bad.id)["State"]["Health"])
                    ["Status"] == "unhealthy" and h)
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    events = dclient.events(since=since, until=time.time() + 1, decode=True,
                            filters={"event": "health_status: healthy"})
    assert good.id in {e["id"] for e in events}
    good.stop(timeout=0)
    bad.stop(timeout=0)
