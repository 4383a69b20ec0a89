"""The guest stage: a pytest selection run as root inside a cgroup-v2-only Debian 6.1 guest.

This host runs cgroup v1 on 6.18, so what needs a real cgroup2 hierarchy (the v2 driver's
limits, OOM kills, cgroup namespaces) or an older kernel (overlays without `lowerdir+`) is
only exercised here. deploy/guest/v2guest.sh boots the guest once per session (QEMU TCG, about
20-35x slower than native, so the selection is kept small); the tests below judge that one run.
Set BERTH_GUEST_STAGE=0 to skip the stage on a workstation.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.images import IMAGES, build_layouts
from tests.guest.conftest import SUMMARY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy/guest/v2guest.sh"
GUEST_TIMEOUT = 1500  # seconds for boot plus the whole selection
# Host state that other work on the host may be rewriting while the guest reads it through 9p:
# the guest gets empty dirs instead (a torn read of skopeo's blob-info cache made it panic).
GUEST_PRIVATE = ("/var/lib/containers", "/var/lib/cni")
INNER = [
    "tests/runtime_security/test_cgroups_v2_real.py",
    "tests/runtime_init/test_overlay.py",
    "tests/runtime_init/test_container.py",
    "tests/runtime_monitor/test_recovery.py::test_oom_kill_is_reported",
    "critest/test_pod_lifecycle.py::test_pod_sandbox_lifecycle[berth]",
    "critest/test_pod_lifecycle.py::test_container_exec_and_exit_code[berth]",
    "critest/test_container_lifecycle.py::test_create_start_stop_remove_with_list_filters[berth]",
    "critest/test_container_lifecycle.py::test_exec_sync_output_and_timeout[berth]",
    "critest/test_container_lifecycle.py::test_update_container_resources[berth]",
    "critest/test_container_lifecycle.py::test_oom_killed_reason[berth]",
    "critest/test_container_lifecycle.py::test_cgroup_visible_inside[berth]",
    "critest/test_stats.py::test_container_stats_memory_and_writable_layer[berth]",
    "critest/test_stats.py::test_pod_sandbox_metrics_use_cadvisor_names[berth]",
    "critest/test_stats.py::test_stats_and_metrics_carry_psi_on_cgroup_v2[berth]",
]
# kernel-independent and slow under TCG (~45 s): the host run covers it
DESELECT = ["tests/runtime_init/test_container.py::test_no_leaked_fds_and_cwd"]
# must pass inside (a skip would hide that the guest lacks what the stage is for)
REQUIRED = [
    "test_cgroups_v2_real.py::test_memory_limit_oom_kills_and_is_counted",
    "test_cgroups_v2_real.py::test_pids_max_bounds_a_fork_loop",
    "test_cgroups_v2_real.py::test_cpu_shares_quota_cpuset_hugetlb_and_unified_land_in_the_kernel",
    "test_overlay.py::test_appending_is_probed_by_kernel_version",
    "test_container.py::test_overlay_from_annotation_with_many_lowers",
    "test_container.py::test_joins_cgroup",
    "test_container.py::test_cgroup_mount_is_read_only_everywhere",
    "test_container.py::test_cgroup_namespace_shows_the_container_its_own_cgroup_as_root",
    "test_container_lifecycle.py::test_oom_killed_reason[berth]",
    "test_stats.py::test_stats_and_metrics_carry_psi_on_cgroup_v2[berth]",
    "test_cgroups_v2_real.py::test_block_io_weight_and_throttles_land_in_io_files",
]
pytestmark = [
    pytest.mark.timeout(GUEST_TIMEOUT + 120),
    pytest.mark.skipif(os.environ.get("BERTH_IN_GUEST") == "1", reason="already in the guest"),
    pytest.mark.skipif(os.environ.get("BERTH_GUEST_STAGE") == "0",
                       reason="BERTH_GUEST_STAGE=0 skips the guest stage"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86 is not installed: run deploy/install.sh"),
]


@dataclass
class GuestRun:
    rc: int
    output: str
    results: Path
    wall: float

    def outcomes(self) -> dict[str, str]:
        """'file.py::name' -> passed/failed/skipped/error, from the inner JUnit report."""
        out: dict[str, str] = {}
        report = self.results / "inner.xml"
        if not report.exists():
            return out
        for case in ET.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").rsplit(".", 1)[-1]
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")),
                        "passed")
            out[f"{module}.py::{case.get('name')}"] = kind
        return out


def _inner_command(results: Path) -> str:
    pytest_cmd = [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-p", "tests.guest.inner", f"--junitxml={results}/inner.xml", *INNER,
                  *(f"--deselect={t}" for t in DESELECT)]
    return "\n".join([
        'echo "guest: kernel $(uname -r); /sys/fs/cgroup $(stat -fc %T /sys/fs/cgroup);'
        ' controllers $(cat /sys/fs/cgroup/cgroup.controllers);'
        ' v1 hierarchies $(awk \'NR > 1 && $2 != 0\' /proc/cgroups | wc -l)"',
        "set -o pipefail",  # inner.log shows progress from the host while the guest runs
        f"{shlex.join(pytest_cmd)} 2>&1 | tee {results}/inner.log",
    ])


@pytest.fixture(scope="session")
def guest_run() -> Iterator[GuestRun]:
    """One boot per session; its results dir (inner log, JUnit, console) is kept on failure."""
    build_layouts({spec.layout for spec in IMAGES.values()})  # build on the host, not under TCG
    results = Path(tempfile.mkdtemp(prefix="berth-guest-"))
    env = dict(os.environ, GUEST_RESULTS=str(results), GUEST_TIMEOUT=str(GUEST_TIMEOUT),
               GUEST_TMPFS=" ".join(GUEST_PRIVATE))
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "run", _inner_command(results)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)
    run = GuestRun(proc.returncode, proc.stdout + proc.stderr, results,
                   time.monotonic() - start)
    (results / "output.txt").write_text(run.output)
    kept = f", log {results}/output.txt" if run.rc else ""
    SUMMARY.append(f"guest stage: {run.wall:.0f} s wall, exit {run.rc}{kept}")
    yield run
    if run.rc == 0:
        shutil.rmtree(results, ignore_errors=True)


def test_guest_is_debian_6_1_with_pure_cgroup_v2(guest_run: GuestRun) -> None:
    line = next((ln for ln in guest_run.output.splitlines() if ln.startswith("guest: ")), "")
    assert " kernel 6.1." in line and "/sys/fs/cgroup cgroup2fs" in line, guest_run.output[-3000:]
    assert all(c in line.split("controllers ")[1].split(";")[0].split()
               for c in ("cpu", "memory", "pids", "io", "cpuset")), line
    assert line.endswith("v1 hierarchies 0"), line


def test_inner_selection_passes(guest_run: GuestRun) -> None:
    assert guest_run.rc == 0, f"guest pytest exit {guest_run.rc}:\n{guest_run.output[-12000:]}"


def test_required_tests_ran_and_passed(guest_run: GuestRun) -> None:
    outcomes = guest_run.outcomes()
    missing = {t: outcomes.get(t, "not run") for t in REQUIRED if outcomes.get(t) != "passed"}
    assert not missing, f"{missing}\n{guest_run.output[-6000:]}"
