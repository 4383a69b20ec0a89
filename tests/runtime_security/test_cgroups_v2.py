"""cgroup v2 driver against a directory of fake interface files.

This machine runs cgroup v1 and a real v2 hierarchy cannot be had here (the unified mount has
no controllers), so the v2 driver is exercised on a tmp dir laid out like cgroupfs: the files
it writes are read back, and the files it parses are written in the kernel's formats.
The core files are also exercised on the real kernel in test_cgroups_v2_real.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runtime.cgroups import IoLimit, Resources, V2Driver, detect, shares_to_weight

MiB = 1024 * 1024
pytestmark = pytest.mark.timeout(30)

PSI = "some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 " \
      "avg300=0.00 total=6789\n"


LIMIT_FILES = ("cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems", "memory.max",
               "memory.swap.max", "memory.high", "pids.max", "hugetlb.2MB.max", "io.weight",
               "io.max")


def fake_cgroup(d: Path, **files: str) -> None:
    """Lays out what the kernel would create on mkdir; `a__b` names the file `a.b`."""
    d.mkdir(parents=True, exist_ok=True)
    base = {"cgroup.procs": "", "cgroup.freeze": "0", "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.subtree_control": "", "cgroup.controllers": "cpuset cpu io memory pids",
            **{name.replace(".", "__"): "" for name in LIMIT_FILES}}
    for name, text in {**base, **files}.items():
        (d / name.replace("__", ".")).write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    fake_cgroup(tmp_path)
    return tmp_path


def test_shares_to_weight_matches_kubelet_formula() -> None:
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(102) == 1 + (100 * 9999) // 262142


def test_tmp_dir_is_not_detected_as_v2(root: Path) -> None:
    assert detect(str(root)) == "v1"


def test_create_delegates_controllers_and_writes_limits(root: Path) -> None:
    drv = V2Driver(str(root))
    for rel in ("kubepods", "kubepods/burstable", "kubepods/burstable/podx",
                "kubepods/burstable/podx/ctr"):
        fake_cgroup(root / rel)
    res = Resources(cpu_shares=1024, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0-1",
                    cpuset_mems="0", memory_limit=64 * MiB, memory_swap_limit=96 * MiB,
                    pids_limit=50, hugepage_limits={"2MB": 4 * MiB}, io_weight=500,
                    io_limits=[IoLimit(254, 0, "wiops", 300)], unified={"memory.high": "50000000"})
    drv.create("kubepods/burstable/podx/ctr", res)
    for cg in (root, root / "kubepods", root / "kubepods/burstable/podx"):
        assert (cg / "cgroup.subtree_control").read_text() == "+cpu +cpuset +io +memory +pids"
    assert (root / "kubepods/burstable/podx/ctr/cgroup.subtree_control").read_text() == ""
    leaf = root / "kubepods/burstable/podx/ctr"
    assert (leaf / "cpu.weight").read_text() == "39"
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cpuset.cpus").read_text() == "0-1"
    assert (leaf / "memory.max").read_text() == str(64 * MiB)
    assert (leaf / "memory.swap.max").read_text() == str(32 * MiB)  # swap minus memory
    assert (leaf / "pids.max").read_text() == "50"
    assert (leaf / "hugetlb.2MB.max").read_text() == str(4 * MiB)
    assert (leaf / "memory.high").read_text() == "50000000"
    assert (leaf / "io.weight").read_text() == "default 4950"  # runc's blkio mapping
    assert (leaf / "io.max").read_text() == "254:0 wiops=300"
    assert drv.exists("kubepods/burstable/podx/ctr")


def test_update_unlimited_values(root: Path) -> None:
    drv = V2Driver(str(root))
    fake_cgroup(root / "c")
    drv.create("c", Resources())
    drv.update("c", Resources(cpu_quota=-1, memory_limit=-1, memory_swap_limit=-1,
                              pids_limit=0))
    assert (root / "c/cpu.max").read_text() == "max 100000"
    assert (root / "c/memory.max").read_text() == "max"
    assert (root / "c/memory.swap.max").read_text() == "max"
    assert (root / "c/pids.max").read_text() == "max"
    with pytest.raises(ValueError):
        drv.update("c", Resources(memory_limit=64 * MiB, memory_swap_limit=32 * MiB))
    with pytest.raises(ValueError):
        drv.update("c", Resources(unified={"../escape": "1"}))


def test_stats_parse_kernel_formats(root: Path) -> None:
    fake_cgroup(
        root / "c",
        cpu__stat="usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 10\n"
                  "nr_throttled 4\nthrottled_usec 700\n",
        memory__current=str(100 * MiB),
        memory__stat="anon 60000000\nfile 30000000\ninactive_file 20000000\n",
        memory__events="low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
        memory__max=str(128 * MiB),
        pids__current="3",
        pids__max="max",
        cpu__pressure=PSI, memory__pressure=PSI, io__pressure=PSI,
        cgroup__procs="11\n12\n",
    )
    drv = V2Driver(str(root))
    s = drv.stats("c")
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (2_500_000, 2_000_000, 500_000)
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (10, 4, 700_000)
    assert s.memory_usage == 100 * MiB
    assert s.memory_working_set == 100 * MiB - 20000000
    assert (s.memory_rss, s.memory_cache, s.memory_failcnt) == (60000000, 30000000, 7)
    assert s.memory_limit == 128 * MiB and s.pids_current == 3 and s.pids_limit is None
    assert s.oom_kill_count == 2 and drv.oom_kill_count("c") == 2
    assert s.psi is not None and s.psi["memory"]["some"]["avg10"] == 1.5
    assert s.psi["io"]["full"]["total"] == 6789
    assert drv.pids("c") == [11, 12]


def test_freeze_thaw_and_kill_via_cgroup_kill(root: Path) -> None:
    drv = V2Driver(str(root))
    fake_cgroup(root / "c", cgroup__events="populated 0\nfrozen 1\n", cgroup__kill="")
    drv.freeze("c")
    assert (root / "c/cgroup.freeze").read_text() == "1"
    drv.thaw("c")
    assert (root / "c/cgroup.freeze").read_text() == "0"
    drv.kill_all("c")
    assert (root / "c/cgroup.kill").read_text() == "1"


def test_kill_all_without_cgroup_kill_signals_each_pid(root: Path) -> None:
    drv = V2Driver(str(root))
    proc = subprocess.Popen(["sleep", "30"])
    try:
        fake_cgroup(root / "c", cgroup__procs=f"{proc.pid}\n",
                    cgroup__events="populated 0\nfrozen 1\n")
        drv.kill_all("c")
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()


def test_remove_is_idempotent_and_climbs_only_when_asked(root: Path) -> None:
    drv = V2Driver(str(root))
    os.makedirs(root / "kubepods/pod1/a")
    os.makedirs(root / "kubepods/pod1/b")
    drv.remove("kubepods/pod1/a", remove_parents_up_to="kubepods")
    drv.remove("kubepods/pod1/a", remove_parents_up_to="kubepods")
    assert (root / "kubepods/pod1/b").is_dir()
    drv.remove("kubepods/pod1/b", remove_parents_up_to="kubepods")
    assert not (root / "kubepods/pod1").exists() and (root / "kubepods").is_dir()
    with pytest.raises(ValueError):
        drv.remove("x/y", remove_parents_up_to="z")
