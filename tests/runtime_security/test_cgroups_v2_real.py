"""The v2 driver on a real cgroup2 kernel hierarchy.

Where /sys/fs/cgroup is cgroup2 (the 6.1 guest of tests/guest, any current distribution) the
driver runs there with every controller: limits are enforced by the kernel, not just written.
On this project's v1-hybrid hosts only the controller-less /sys/fs/cgroup/unified mount exists,
so only the core files (procs, freeze, kill, events, cpu.stat, PSI) are checked there and the
limit tests skip. The driver is rooted at a private cgroup; on the guest it enables controllers
in the root's subtree_control, as systemd does on a v2 host.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from runtime.cgroups import IoLimit, Resources, V2Driver, detect
from runtime.cgroups.model import keyed, read
from tests.runtime_security.conftest import release, spawn_waiting

ROOT = "/sys/fs/cgroup" if detect() == "v2" else "/sys/fs/cgroup/unified"
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.isdir(ROOT) or detect(ROOT) != "v2",
                       reason="no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified"),
]
MiB = 1 << 20


def _controllers() -> set[str]:
    try:
        return set(read(os.path.join(ROOT, "cgroup.controllers")).split())
    except FileNotFoundError:
        return set()


needs_controllers = pytest.mark.skipif(
    not {"cpu", "memory", "pids", "cpuset"} <= _controllers(),
    reason="this cgroup2 mount has no cpu/memory/pids/cpuset controllers (v1-hybrid host)")


@pytest.fixture
def v2() -> Iterator[V2Driver]:
    name = f"berth-test-{uuid.uuid4().hex[:10]}"
    V2Driver(ROOT).create(name, Resources())  # delegates the controllers the root has
    base = os.path.join(ROOT, name)
    drv = V2Driver(base)
    yield drv
    for dirpath, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):
        if dirpath != base:
            rel = os.path.relpath(dirpath, base)
            drv.kill_all(rel)
            drv.remove(rel)
    os.rmdir(base)


def _events(drv: V2Driver, path: str, name: str) -> dict[str, int]:
    return keyed(read(os.path.join(drv.root, path, name)))


def test_procs_freeze_kill_and_remove_on_a_real_v2_cgroup(v2: V2Driver) -> None:
    path = "pod/ctr"
    v2.create(path, Resources())
    proc = spawn_waiting("import time\nc0 = time.process_time()\n"
                         "while time.process_time() - c0 < 0.05: pass\n"
                         "print('spun', flush=True)\ntime.sleep(30)")
    try:
        v2.add_pid(path, proc.pid)
        assert v2.pids(path) == [proc.pid]
        release(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "spun"
        v2.freeze(path)
        assert _events(v2, path, "cgroup.events")["frozen"] == 1
        v2.thaw(path)
        stats = v2.stats(path)
        assert stats.psi is not None and set(stats.psi) == {"cpu", "memory", "io"}
        assert stats.cpu_usage_ns >= 50_000_000 and stats.memory_limit is None
        v2.kill_all(path)
        assert proc.wait(timeout=30) == -9
    finally:
        proc.kill()
        proc.wait()
    assert v2.pids(path) == [] and v2.oom_kill_count(path) == 0
    v2.remove(path, remove_parents_up_to=None)
    assert not v2.exists(path) and v2.exists("pod")


@needs_controllers
def test_memory_limit_oom_kills_and_is_counted(v2: V2Driver) -> None:
    """32 MiB, no swap: a 100 MiB allocation is OOM-killed and memory.events says so."""
    path = "oom"
    v2.create(path, Resources(memory_limit=32 * MiB, memory_swap_limit=32 * MiB))
    assert read(os.path.join(v2.root, path, "memory.max")).strip() == str(32 * MiB)
    assert read(os.path.join(v2.root, path, "memory.swap.max")).strip() == "0"
    proc = spawn_waiting("b = bytearray(100 * 2**20)\nprint('allocated', flush=True)")
    try:
        v2.add_pid(path, proc.pid)
        release(proc)
        assert proc.wait(timeout=60) == -9
        assert proc.stdout is not None and proc.stdout.read() == ""
    finally:
        proc.kill()
        proc.wait()
    assert v2.oom_kill_count(path) >= 1
    stats = v2.stats(path)
    assert stats.oom_kill_count >= 1 and stats.memory_limit == 32 * MiB
    assert stats.memory_failcnt >= 1  # memory.events max: the limit was hit


@needs_controllers
def test_pids_max_bounds_a_fork_loop(v2: V2Driver) -> None:
    path = "pids"
    v2.create(path, Resources(pids_limit=8))
    proc = spawn_waiting(
        "import os, time\nkids = []\nrefused = 0\n"
        "for _ in range(40):\n"
        "    try:\n        pid = os.fork()\n    except BlockingIOError:\n"
        "        refused += 1\n        continue\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(len(kids), refused, flush=True)\ntime.sleep(30)")
    try:
        v2.add_pid(path, proc.pid)
        release(proc)
        assert proc.stdout is not None
        forked, refused = (int(x) for x in proc.stdout.readline().split())
        assert (forked, refused) == (7, 33)  # the parent is the 8th task
        assert v2.stats(path).pids_current == 8 and v2.stats(path).pids_limit == 8
        assert _events(v2, path, "pids.events")["max"] >= 33
        v2.kill_all(path)  # cgroup.kill takes the children too
        assert proc.wait(timeout=30) == -9 and v2.pids(path) == []
    finally:
        proc.kill()
        proc.wait()


@needs_controllers
def test_cpu_shares_quota_cpuset_hugetlb_and_unified_land_in_the_kernel(v2: V2Driver) -> None:
    """kubelet's shares→weight formula, cpu.max, cpuset, hugetlb and raw unified keys."""
    path = "cpu"
    huge = {"2MB": 4 * MiB} if "hugetlb" in _controllers() else {}
    v2.create(path, Resources(cpu_shares=1024, cpu_quota=50000, cpu_period=100000,
                              cpuset_cpus="0", cpuset_mems="0", hugepage_limits=huge,
                              unified={"memory.high": str(64 * MiB)}))

    def value(name: str) -> str:
        return read(os.path.join(v2.root, path, name)).strip()

    assert value("cpu.weight") == str(1 + (1024 - 2) * 9999 // 262142) == "39"
    assert value("cpu.max") == "50000 100000"
    assert value("cpuset.cpus") == "0" and value("cpuset.cpus.effective") == "0"
    assert value("memory.high") == str(64 * MiB)
    if huge:
        assert value("hugetlb.2MB.max") == str(4 * MiB)
    for shares, weight in ((2, "1"), (262144, "10000"), (102, "4")):
        v2.update(path, Resources(cpu_shares=shares))
        assert value("cpu.weight") == weight
    v2.update(path, Resources(cpu_quota=-1, cpu_period=100000))
    assert value("cpu.max") == "max 100000"


@needs_controllers
def test_block_io_weight_and_throttles_land_in_io_files(v2: V2Driver) -> None:
    """The guest has one virtio disk (a null device) to throttle."""
    disks = [d for d in sorted(os.listdir("/sys/block")) if d.startswith(("vd", "sd", "nvme"))]
    if not disks:
        pytest.skip("no disk block device")
    major, minor = (int(x) for x in read(f"/sys/block/{disks[0]}/dev").split(":"))
    path = "io"
    v2.create(path, Resources(io_weight=500, io_limits=[IoLimit(major, minor, "rbps", 1048576),
                                                        IoLimit(major, minor, "wiops", 300)]))
    assert read(os.path.join(v2.root, path, "io.weight")).split("\n")[0] == "default 4950"
    assert read(os.path.join(v2.root, path, "io.max")).strip() == \
        f"{major}:{minor} rbps=1048576 wbps=max riops=max wiops=300"
