"""Count every kind of state one berthd can leak, so soaks can compare before and after."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from runtime.images.unpack_procs import LINGER
from tests.fixtures import hostclean
from tests.fixtures.berthd import Berthd


@dataclass(frozen=True)
class Snapshot:
    """Counts of leakable things owned by one berthd (and its pods' cgroup parent)."""

    mounts: int  # mount points under the berthd workdir (netns/ipc/uts pins, shm, ...)
    netns_pins: int  # files under <run_dir>/pods
    veths: int  # links enslaved to the fixture bridge
    ip_leases: int  # host-local lease files
    cgroups: int  # cgroup dirs below the soak's cgroup parent, all controllers
    fw_rules: int  # iptables-save + nft ruleset lines naming the fixture network
    processes: int  # descendants of berthd and of the monitor
    berthd_fds: int
    monitor_fds: int

    def minus(self, other: Snapshot) -> dict[str, int]:
        """Per-field growth since `other` (the figures a leak report prints)."""
        return {f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def network_name(d: Berthd) -> str:
    """The CNI network of the fixture's conflist: firewall rule comments carry it."""
    conf = next((d.workdir / "net.d").glob("*.conflist"))
    return str(json.loads(conf.read_text())["name"])


def monitor_pid(d: Berthd) -> int:
    """The node monitor's pid, from the flock file it keeps in the state dir."""
    try:
        return int((d.state_dir / "monitor.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def rss_kb(pid: int) -> int:
    """VmRSS of one process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(roots: list[int]) -> list[int]:
    """Every live process below the given pids (not the pids themselves)."""
    kids, out, todo = _children(), [], [r for r in roots if r]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _unpack_worker(pid: int) -> bool:
    """A pull's unpack worker: it stays LINGER seconds after the last pull by design
    (runtime/images/unpack_procs.py), and tests/images/test_unpack_procs.py checks it goes."""
    try:
        return b"runtime.images.unpack_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _lines(cmd: list[str], needle: str) -> int:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(needle in line for line in out.splitlines())


def firewall_lines(needle: str) -> int:
    """Rules naming needle in both the iptables view and the native nft ruleset."""
    return _lines(["iptables-save"], needle) + _lines(["nft", "list", "ruleset"], needle)


def cgroup_dirs(parent: str) -> int:
    """Directories below /sys/fs/cgroup/<controller>/<parent>, summed over controllers."""
    total = 0
    for base in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        total += sum(1 for _root, dirs, _files in os.walk(base) for _ in dirs)
    return total


def remove_cgroup_parent(parent: str) -> None:
    """rmdir the soak's (by then empty) cgroup parent in every controller."""
    for base in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        hostclean.rmdir_if_empty(base)


def snapshot(d: Berthd, cgroup_parent: str) -> Snapshot:
    """Count everything now; cheap enough to take every few cycles."""
    assert d.proc is not None
    mon = monitor_pid(d)
    veths = subprocess.run(["ip", "-o", "link", "show", "master", d.bridge],
                           capture_output=True, text=True, check=False).stdout
    pins = d.run_dir / "pods"
    leases = d.workdir / "ipam"
    # a pull's unpack workers stay LINGER seconds after it: counts taken while one is exiting
    # (berthd has closed its socket, the worker is not gone yet) would be off, so let them go
    deadline = time.monotonic() + LINGER + 10
    while [p for p in descendants([d.proc.pid, mon]) if _unpack_worker(p)]:
        assert time.monotonic() < deadline, "berthd's unpack workers outlived their linger"
        time.sleep(0.2)
    below = descendants([d.proc.pid, mon])
    return Snapshot(
        mounts=len(hostclean.mounts_under(d.workdir)),
        netns_pins=sum(1 for p in pins.rglob("*") if p.is_file()) if pins.exists() else 0,
        veths=len(veths.splitlines()),
        ip_leases=sum(1 for p in leases.rglob("*") if p.is_file() and p.name[0].isdigit()),
        cgroups=cgroup_dirs(cgroup_parent),
        fw_rules=firewall_lines(network_name(d)),
        processes=len(below),
        berthd_fds=_count_fds(d.proc.pid),
        monitor_fds=_count_fds(mon),
    )
