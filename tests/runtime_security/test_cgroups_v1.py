"""cgroup v1 driver on the real kernel (this machine runs v1): limits, pids, OOM, freeze, kill."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from runtime.cgroups import CgroupDriver, IoLimit, Resources, V1Driver, detect, driver
from runtime.cgroups.statfiles import StatFiles
from tests.fixtures.waits import until
from tests.runtime_security.conftest import PY, release, spawn_waiting

MiB = 1024 * 1024
pytestmark = pytest.mark.timeout(60)


def knob(v1: V1Driver, ctrl: str, path: str, name: str) -> str:
    with open(os.path.join(v1.mounts[ctrl], path, name)) as f:
        return f.read().strip()


def test_detect_and_driver_pick_v1() -> None:
    assert detect() == "v1"
    assert detect("/sys/fs/cgroup/unified") == "v2"
    assert isinstance(driver(), V1Driver)


def test_create_writes_limits_in_every_hierarchy(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/pod1/ctr1"
    res = Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0",
                    cpuset_mems="0", memory_limit=64 * MiB, memory_swap_limit=128 * MiB,
                    pids_limit=20)
    v1.create(path, res)
    for base in v1.hierarchies:
        assert os.path.isdir(os.path.join(base, path))
    assert knob(v1, "cpu", path, "cpu.shares") == "512"
    assert knob(v1, "cpu", path, "cpu.cfs_quota_us") == "50000"
    assert knob(v1, "cpu", path, "cpu.cfs_period_us") == "100000"
    assert knob(v1, "cpuset", path, "cpuset.cpus") == "0"
    root_cpus = knob(v1, "cpuset", "", "cpuset.cpus")
    assert knob(v1, "cpuset", f"{cg_root}/pod1", "cpuset.cpus") == root_cpus  # copied down
    assert knob(v1, "memory", path, "memory.limit_in_bytes") == str(64 * MiB)
    assert knob(v1, "memory", path, "memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert knob(v1, "pids", path, "pids.max") == "20"
    assert v1.exists(path)
    v1.update(path, Resources(pids_limit=30))  # a partial update leaves the rest alone
    assert knob(v1, "pids", path, "pids.max") == "30"
    assert knob(v1, "cpu", path, "cpu.cfs_quota_us") == "50000"
    assert knob(v1, "memory", path, "memory.limit_in_bytes") == str(64 * MiB)


def _a_block_device() -> tuple[int, int]:
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("loop", "ram", "zram")):
            major, minor = Path(f"/sys/block/{name}/dev").read_text().split(":")
            return int(major), int(minor)
    pytest.skip("no disk block device on this host")


def test_block_io_throttles_land_in_blkio(v1: V1Driver, cg_root: str) -> None:
    major, minor = _a_block_device()
    path = f"{cg_root}/io"
    v1.create(path, Resources(io_limits=[IoLimit(major, minor, "rbps", 1048576),
                                         IoLimit(major, minor, "wiops", 300)]))
    assert knob(v1, "blkio", path, "blkio.throttle.read_bps_device") == f"{major}:{minor} 1048576"
    assert knob(v1, "blkio", path, "blkio.throttle.write_iops_device") == f"{major}:{minor} 300"


def test_update_raises_and_lowers_memory_with_swap(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/ctr"
    v1.create(path, Resources(memory_limit=64 * MiB, memory_swap_limit=64 * MiB))
    v1.update(path, Resources(memory_limit=256 * MiB, memory_swap_limit=512 * MiB))
    assert knob(v1, "memory", path, "memory.limit_in_bytes") == str(256 * MiB)
    assert knob(v1, "memory", path, "memory.memsw.limit_in_bytes") == str(512 * MiB)
    v1.update(path, Resources(memory_limit=32 * MiB, memory_swap_limit=32 * MiB))
    assert knob(v1, "memory", path, "memory.limit_in_bytes") == str(32 * MiB)
    assert knob(v1, "memory", path, "memory.memsw.limit_in_bytes") == str(32 * MiB)
    v1.update(path, Resources(memory_limit=-1, pids_limit=0, cpu_quota=-1))
    assert v1.stats(path).memory_limit is None
    assert v1.stats(path).pids_limit is None
    assert knob(v1, "cpu", path, "cpu.cfs_quota_us") == "-1"


def test_child_joins_and_stats_move_under_cpu_quota(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/busy"
    v1.create(path, Resources(cpu_quota=20000, cpu_period=100000))
    # Burn 150 ms of CPU: at 20 ms per 100 ms period that takes at least ~0.65 s of wall time.
    proc = spawn_waiting(
        "import time\nx = bytearray(8 << 20)\nt0 = time.monotonic()\n"
        "c0 = time.process_time()\nwhile time.process_time() - c0 < 0.15: pass\n"
        "print(time.monotonic() - t0, flush=True)\nsys.stdin.readline()"
    )
    try:
        v1.add_pid(path, proc.pid)
        assert v1.pids(path) == [proc.pid]
        before = v1.stats(path)
        release(proc)
        assert proc.stdout is not None
        wall = float(proc.stdout.readline())
        after = v1.stats(path)
        assert wall > 0.5
        assert after.cpu_usage_ns - before.cpu_usage_ns >= 0.15e9
        assert after.cpu_user_ns + after.cpu_system_ns > 0
        assert after.cpu_throttled_periods > 0 and after.cpu_throttled_ns > 0
        assert after.memory_usage > 8 << 20 and after.memory_rss > 0
        assert 0 < after.memory_working_set <= after.memory_usage
        assert after.pids_current == 1 and after.psi is None
        assert after.timestamp_ns > before.timestamp_ns
    finally:
        v1.kill_all(path)
        proc.wait()
    assert v1.pids(path) == []


def test_memory_hog_is_oom_killed_and_counted_before_remove(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/hog"
    v1.create(path, Resources(memory_limit=32 * MiB, memory_swap_limit=32 * MiB))
    hog = f"{PY} -c 'b = bytearray(256 << 20); print(len(b))'"
    proc = subprocess.Popen(["/bin/sh", "-c", f"read _; {hog}; exit $?"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    v1.add_pid(path, proc.pid)
    _, _ = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 137
    assert v1.oom_kill_count(path) == 1
    v1.remove(path)
    assert not v1.exists(path)
    assert v1.oom_kill_count(path) == 0  # gone with the cgroup: read it first


def test_pids_limit_stops_a_fork_loop(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/forky"
    v1.create(path, Resources(pids_limit=8))
    proc = spawn_waiting(
        "import os, time\nok = fail = 0\n"
        "for _ in range(30):\n"
        "    try:\n        pid = os.fork()\n    except BlockingIOError:\n        fail += 1\n"
        "        continue\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    ok += 1\n"
        "print(ok, fail, flush=True)\nsys.stdin.readline()"
    )
    try:
        v1.add_pid(path, proc.pid)
        release(proc)
        assert proc.stdout is not None
        ok, fail = map(int, proc.stdout.readline().split())
        assert ok == 7 and fail == 23
        assert v1.stats(path).pids_current == 8
    finally:
        v1.kill_all(path)
        proc.wait()
    assert v1.pids(path) == []


def test_freeze_kill_all_remove_leave_nothing(v1: V1Driver, cg_root: str) -> None:
    path = f"{cg_root}/pod/ctr"
    v1.create(path, Resources())
    proc = spawn_waiting("while True: pass")
    try:
        v1.add_pid(path, proc.pid)
        release(proc)
        time.sleep(0.05)
        v1.freeze(path)
        assert knob(v1, "freezer", path, "freezer.state") == "FROZEN"
        frozen = v1.stats(path).cpu_usage_ns
        time.sleep(0.2)
        assert v1.stats(path).cpu_usage_ns - frozen < 5_000_000
        v1.thaw(path)
        until(lambda: v1.stats(path).cpu_usage_ns - frozen > 10_000_000, 10, 0.05,
              "10 ms of CPU for the thawed loop")
        v1.freeze(path)
        v1.kill_all(path)  # works on a frozen cgroup too
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -9 and v1.pids(path) == []
    v1.remove(path, remove_parents_up_to=cg_root)
    v1.remove(path, remove_parents_up_to=cg_root)  # idempotent
    assert not v1.exists(path) and not v1.exists(f"{cg_root}/pod") and v1.exists(cg_root)


def test_remove_keeps_a_parent_that_still_has_children(v1: V1Driver, cg_root: str) -> None:
    drv: CgroupDriver = v1
    drv.create(f"{cg_root}/pod/a", Resources())
    drv.create(f"{cg_root}/pod/b", Resources())
    drv.remove(f"{cg_root}/pod/a", remove_parents_up_to=cg_root)
    assert drv.exists(f"{cg_root}/pod/b")
    drv.remove(f"{cg_root}/pod/b", remove_parents_up_to=cg_root)
    assert not drv.exists(f"{cg_root}/pod")


@pytest.mark.parametrize("bad", ["/abs", "a/../b", "", "./x"])
def test_paths_cannot_escape(v1: V1Driver, bad: str) -> None:
    with pytest.raises(ValueError):
        v1.create(bad, Resources())


def test_join_moves_the_calling_process_in_every_hierarchy(v1: V1Driver, cg_root: str) -> None:
    """join() writes "0" to `tasks` (no threadgroup lock); the whole one-thread process moves."""
    path = f"{cg_root}/joiner"
    v1.create(path, Resources())
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()  # the child stays alive (an exited task shows "/") until we looked
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.close(hold_w)
            v1.join(path)
            os.write(w, b"ok")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(hold_r)
    try:
        assert os.read(r, 2) == b"ok"
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        v1_lines = [ln for ln in lines if not ln.startswith("0::")]
        assert v1_lines and all(ln.endswith("/" + path) for ln in v1_lines), lines
        assert v1.pids(path) == [pid]
    finally:
        os.close(hold_w)
        os.close(r)
        os.waitpid(pid, 0)
    v1.remove(path)


def test_kept_open_stat_files_reread_and_fail_once_the_cgroup_goes(v1: V1Driver,
                                                                   cg_root: str) -> None:
    """StatFiles re-reads with pread at offset 0: each read is the file's current text, the
    same figures stats() gives; after rmdir the kept descriptors fail (ENODEV) and a reopen
    finds no cgroup."""
    path = f"{cg_root}/kept"
    v1.create(path, Resources(memory_limit=64 * MiB, pids_limit=20))
    files = StatFiles(v1.stat_paths(path), v1.STAT_REQUIRED)
    try:
        first = v1.parse_stats(files.read(), 1)
        proc = spawn_waiting("")  # a process in the cgroup: pids.current moves
        try:
            v1.add_pid(path, proc.pid)
            again = v1.parse_stats(files.read(), 2)
            assert (first.pids_current, again.pids_current) == (0, 1)
            assert again.memory_limit == 64 * MiB and again.pids_limit == 20
            fresh = v1.stats(path)
            assert (fresh.memory_limit, fresh.pids_limit, fresh.pids_current) == (
                again.memory_limit, again.pids_limit, again.pids_current)
        finally:
            release(proc)
            proc.wait(timeout=30)
        v1.remove(path)
        with pytest.raises(OSError):
            files.read()
    finally:
        files.close()
    with pytest.raises(FileNotFoundError):
        StatFiles(v1.stat_paths(path), v1.STAT_REQUIRED)
