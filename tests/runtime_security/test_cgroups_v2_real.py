"""cgroup v2 core files on the real kernel, through this host's hybrid unified mount.

The unified mount here has no cpu/memory/pids controllers, so limits are covered by the
fake-file tests in test_cgroups_v2.py; what the core provides for real (cgroup.procs,
cgroup.freeze, cgroup.kill, cgroup.events, cpu.stat, PSI) is checked here. The driver is rooted
at a private cgroup so the host's root subtree_control is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from runtime.cgroups import Resources, V2Driver, detect
from tests.runtime_security.conftest import release, spawn_waiting

UNIFIED = "/sys/fs/cgroup/unified"
pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not os.path.isdir(UNIFIED) or detect(UNIFIED) != "v2",
                       reason="no cgroup2 mount at /sys/fs/cgroup/unified"),
]


@pytest.fixture
def v2() -> Iterator[V2Driver]:
    base = os.path.join(UNIFIED, f"berth-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(base)
    drv = V2Driver(base)
    yield drv
    for dirpath, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):
        if dirpath != base:
            rel = os.path.relpath(dirpath, base)
            drv.kill_all(rel)
            drv.remove(rel)
    os.rmdir(base)


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
        with open(os.path.join(v2.root, path, "cgroup.events")) as f:
            assert "frozen 1" in f.read()
        v2.thaw(path)
        stats = v2.stats(path)
        assert stats.psi is not None and set(stats.psi) == {"cpu", "memory", "io"}
        assert stats.cpu_usage_ns >= 50_000_000 and stats.memory_limit is None
        v2.kill_all(path)
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()
    assert v2.pids(path) == [] and v2.oom_kill_count(path) == 0
    v2.remove(path, remove_parents_up_to=None)
    assert not v2.exists(path) and v2.exists("pod")
