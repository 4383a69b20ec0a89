"""Crashes on either side of the socket, OOM, and leak checks after churn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.containers import MonitorError
from runtime.logs import join_lines, parse_log
from tests.runtime_monitor.conftest import pid_alive, proc, spawner, spec, wait_gone

pytestmark = pytest.mark.timeout(120)
ROOT = str(Path(__file__).resolve().parents[2])
SEQ = "i=0; while [ $i -lt {n} ]; do echo seq$i; i=$((i+1)); usleep 3000; done"


def test_client_sigkill_loses_nothing(mon, rootfs, tmp_path):
    """berthd (here a driver process) dies mid-write; containers and logs carry on."""
    n = 400
    driver = textwrap.dedent(f"""
        from tests.runtime_monitor.syncclient import ensure_monitor_sync
        from tests.runtime_monitor.conftest import spec
        c = ensure_monitor_sync({mon.state_dir!r}, {mon.run_dir!r}, {spawner()!r})
        for k in range(3):
            c.create(f"c{{k}}", spec("sh", "-c", {SEQ.format(n=n)!r}), {str(rootfs)!r},
                     log_path={str(tmp_path)!r} + f"/c{{k}}.log")
            c.start(f"c{{k}}")
        print("ready", flush=True)
        import time; time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        time.sleep(0.2)
        p.kill()
    finally:
        p.kill()
        p.wait()
    c = mon.connect()
    assert {s.id: s.status for s in c.list()} == {f"c{k}": "running" for k in range(3)}
    for k in range(3):
        st = c.wait(f"c{k}", timeout=30)
        assert (st.status, st.exit_code, st.reason) == ("stopped", 0, "Completed")
        lines = join_lines(parse_log((tmp_path / f"c{k}.log").read_bytes()))
        assert lines == [f"seq{i}".encode() for i in range(n)]


def test_monitor_sigkill_kills_containers_and_reports_monitor_lost(mon, rootfs, tmp_path):
    c = mon.client
    pids = []
    for k in range(2):
        c.create(f"c{k}", spec("sleep", "300"), str(rootfs), log_path=str(tmp_path / f"{k}.log"))
        pids.append(c.start(f"c{k}").pid)
    c.create("c2", spec("sleep", "300"), str(rootfs))  # created, never started
    pids.append(c.state("c2").pid)
    old = mon.pid
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    for pid in pids:
        wait_gone(pid)
    states = {s.id: s for s in c.list()}  # the same client starts a new monitor
    mon.pid = int(c.ping()["pid"])
    assert mon.pid != old
    assert set(states) == {"c0", "c1", "c2"}
    for st in states.values():
        assert (st.status, st.exit_code, st.reason) == ("stopped", 255, "MonitorLost")
        assert "monitor exited" in st.message
    for k in range(3):
        c.delete(f"c{k}")


def test_oom_kill_is_reported(mon, rootfs, cgroup_parent):
    s = spec("sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
    s["linux"]["resources"] = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}
    c = mon.client
    path = f"{cgroup_parent}/c1"
    c.create("c1", s, str(rootfs), cgroup_path=path)
    c.start("c1")
    st = c.wait("c1", timeout=30)
    assert st.reason == "OOMKilled", st
    assert st.exit_code == 137
    c.delete("c1")
    assert not Path("/sys/fs/cgroup/memory", path).exists()


def test_churn_leaks_nothing(mon, rootfs, tmp_path, cgroup_parent):
    c = mon.client
    c.create("warm", spec("true"), str(rootfs), log_path=str(tmp_path / "warm.log"))
    c.start("warm")
    c.wait("warm", timeout=10)
    c.delete("warm")
    fds_before = len(os.listdir(f"/proc/{mon.pid}/fd"))
    for i in range(200):
        cid = f"churn{i}"
        c.create(cid, spec("true"), str(rootfs), cgroup_path=f"{cgroup_parent}/{cid}",
                 log_path=str(tmp_path / f"{cid}.log"))
        c.start(cid)
        assert c.wait(cid, timeout=10).exit_code == 0
        c.delete(cid)
    bad = spec("true")
    bad["linux"]["namespaces"].append({"type": "user"})  # refused by runtime.init at create
    c.create("runner", spec("sleep", "60"), str(rootfs))
    c.start("runner")
    for i in range(20):
        with pytest.raises(MonitorError):
            c.create(f"bad{i}", bad, str(rootfs), cgroup_path=f"{cgroup_parent}/bad{i}",
                     log_path=str(tmp_path / "bad.log"))
        c.create(f"noexec{i}", spec("/missing"), str(rootfs), log_path=str(tmp_path / "n.log"))
        with pytest.raises(MonitorError):
            c.start(f"noexec{i}")
        c.wait(f"noexec{i}", timeout=10)
        c.delete(f"noexec{i}")
        with pytest.raises(MonitorError):
            c.exec_sync("runner", proc("/missing"), 5)
    c.stop("runner", 0)
    c.delete("runner")
    assert len(os.listdir(f"/proc/{mon.pid}/fd")) == fds_before
    assert c.list() == []
    assert os.listdir(Path(mon.state_dir, "containers")) == []
    assert [p for p in Path("/sys/fs/cgroup/memory", cgroup_parent).iterdir() if p.is_dir()] == []
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(mon.pid)], capture_output=True,
                         text=True, check=False).stdout.split()
    assert [p for p in out if pid_alive(int(p))] == []
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()
