"""Create/start/stop/delete through the monitor, exit statuses and typed errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runtime.containers import (
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    MonitorError,
    NotFound,
)
from tests.fixtures._proc import wait_trapped
from tests.fixtures.waits import until
from tests.runtime_monitor.conftest import pid_alive, spec

pytestmark = pytest.mark.timeout(60)


def run(mon, rootfs, cid, *args, **kw):
    c = mon.client
    c.create(cid, spec(*args), str(rootfs), **kw)
    c.start(cid)
    return c.wait(cid, timeout=20)


@pytest.mark.parametrize(("script", "code", "reason"), [
    ("exit 0", 0, "Completed"),
    ("exit 3", 3, "Error"),
    ("exec cat /no/such/file", 1, "Error"),
])
def test_exit_status(mon, rootfs, script, code, reason):
    st = run(mon, rootfs, "c1", "sh", "-c", script)
    assert (st.status, st.exit_code, st.reason) == ("stopped", code, reason)
    assert st.created_ns <= st.started_ns <= st.finished_ns


def test_state_is_durable_and_lifecycle_complete(mon, rootfs, tmp_path):
    c = mon.client
    script = "trap 'exit 7' TERM; while :; do usleep 20000; done"
    st = c.create("c1", spec("sh", "-c", script), str(rootfs), log_path=str(tmp_path / "c1.log"))
    assert st.status == "created" and st.pid > 0
    record = Path(mon.state_dir, "containers", "c1", "state.json")
    assert json.loads(record.read_text())["status"] == "created"
    assert c.start("c1").status == "running"
    wait_trapped(st.pid, signal.SIGTERM)
    assert json.loads(record.read_text())["status"] == "running"
    assert [s.id for s in c.list()] == ["c1"]
    st = c.stop("c1", 5)
    assert st.status == "stopped" and st.exit_code == 7
    assert json.loads(record.read_text())["exit_code"] == 7
    assert not pid_alive(st.pid)
    c.delete("c1")
    assert not record.parent.exists()
    assert c.list() == []


def test_stop_escalates_to_sigkill(mon, rootfs):
    c = mon.client
    st = c.create("c1", spec("sh", "-c", "trap '' TERM; echo ready; sleep 30"), str(rootfs))
    c.start("c1")
    wait_trapped(st.pid, signal.SIGTERM)
    t0 = time.monotonic()
    st = c.stop("c1", 0.5)
    assert 0.4 < time.monotonic() - t0 < 3
    assert st.exit_code == 137


def test_kill_with_custom_signal(mon, rootfs):
    c = mon.client
    st = c.create("c1", spec("sh", "-c", "trap 'exit 42' USR1; while :; do usleep 20000; done"),
                  str(rootfs))
    c.start("c1")
    wait_trapped(st.pid, signal.SIGUSR1)
    c.kill("c1", 10)  # SIGUSR1, e.g. an image's STOPSIGNAL
    assert c.wait("c1", timeout=10).exit_code == 42


def test_sigkill_gives_137(mon, rootfs):
    c = mon.client
    c.create("c1", spec("sleep", "30"), str(rootfs))
    c.start("c1")
    c.kill("c1", 9)
    st = c.wait("c1", timeout=10)
    assert (st.exit_code, st.reason) == (137, "Error")


def test_typed_errors(mon, rootfs):
    c = mon.client
    with pytest.raises(NotFound, match="nope"):
        c.state("nope")
    for bad in ("../escape", "", "a/b", ".hidden"):
        with pytest.raises(InvalidArgument):
            c.create(bad, spec("true"), str(rootfs))
    with pytest.raises(InvalidArgument, match="terminal"):
        c.create("c1", spec("true"), str(rootfs), tty=True)
    c.create("c1", spec("sleep", "30"), str(rootfs))
    with pytest.raises(AlreadyExists):
        c.create("c1", spec("true"), str(rootfs))
    c.start("c1")
    with pytest.raises(InvalidState):
        c.start("c1")
    with pytest.raises(InvalidState, match="stop it first"):
        c.delete("c1")
    c.stop("c1", 0)
    with pytest.raises(InvalidState):
        c.kill("c1", 15)
    c.delete("c1")


def test_delete_created_never_started(mon, rootfs):
    c = mon.client
    st = c.create("c1", spec("sleep", "30"), str(rootfs))
    c.delete("c1")
    assert not pid_alive(st.pid)
    with pytest.raises(NotFound):
        c.state("c1")


def test_start_failure_is_reported(mon, rootfs):
    c = mon.client
    c.create("c1", spec("/no/such/binary"), str(rootfs))
    with pytest.raises(MonitorError, match="no/such/binary|No such file"):
        c.start("c1")
    st = c.wait("c1", timeout=10)
    assert st.status == "stopped" and st.exit_code != 0


def test_socket_is_private_path(mon):
    sock = Path(mon.run_dir, "monitor.sock")
    assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o600
    with open("/proc/net/unix") as f:
        assert not any(f"@{mon.run_dir}" in line for line in f)


def test_ensure_monitor_reuses_running_one(mon):
    first = mon.pid
    mon.connect()
    assert mon.pid == first
    assert mon.client.ping()["version"] == 1
    assert os.path.exists(Path(mon.state_dir, "monitor.lock"))


def test_events_stream(mon, rootfs):
    c = mon.client

    live = threading.Event()

    async def watch():
        landed = asyncio.Event()  # set by events() once no later change can be missed
        waiter = asyncio.get_running_loop().create_task(landed.wait())
        waiter.add_done_callback(lambda _t: live.set())
        seen = []
        async for ev in c.aio.events(landed):
            seen.append((ev.kind, ev.state.id, ev.state.status))
            if ev.kind == "deleted":
                return seen
        return seen

    fut = asyncio.run_coroutine_threadsafe(watch(), c._loop)
    assert live.wait(10)
    c.create("c1", spec("true"), str(rootfs))
    c.start("c1")
    c.wait("c1", timeout=10)
    c.delete("c1")
    assert fut.result(10) == [("created", "c1", "created"), ("started", "c1", "running"),
                              ("stopped", "c1", "stopped"), ("deleted", "c1", "stopped")]


def test_update_and_stats(mon, rootfs, cgroup_parent):
    c = mon.client
    c.create("c1", spec("sleep", "30"), str(rootfs), cgroup_path=f"{cgroup_parent}/c1")
    c.start("c1")
    c.update("c1", {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    stats = c.stats("c1")
    assert stats["memory_limit"] == 64 << 20 and stats["pids_limit"] == 50
    assert stats["pids_current"] >= 1 and stats["memory_usage"] > 0
    c.stop("c1", 0)
    c.delete("c1")


def test_overlay_rootfs_lives_in_the_container_mount_ns(mon, rootfs, tmp_path):
    c = mon.client
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    overlay = {"lowerdirs": [str(rootfs)], "upperdir": str(upper), "workdir": str(work)}
    c.create("c1", spec("sh", "-c", "echo hi > /tmp/made"), str(merged), overlay=overlay)
    c.start("c1")
    assert c.wait("c1", timeout=10).exit_code == 0
    assert (upper / "tmp" / "made").read_text() == "hi\n"
    assert not (rootfs / "tmp" / "made").exists()
    assert str(merged) not in Path("/proc/self/mountinfo").read_text()
    c.delete("c1")


def test_sync_wait_timeout_leaves_no_pending_call(mon, rootfs):
    c = mon.client
    c.create("c1", spec("sleep", "30"), str(rootfs))
    c.start("c1")
    with pytest.raises(TimeoutError):
        c.wait("c1", timeout=0.2)
    # the timed-out call's entry goes as its wait unwinds
    until(lambda: c.aio._pending == {}, 5, 0.01, "no pending call")
    assert c.state("c1").status == "running"
