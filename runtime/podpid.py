"""A pod-wide pid namespace: the one case that needs a process, a tiny reaping pid 1.

A pid namespace dies with its init, so it cannot be held by a bind mount alone. Pods that share
one (kubelet's shareProcessNamespace) get a detached `unshare --pid=FILE --fork` whose child runs
the loop below as pid 1: it reaps orphans (exec probes leave them); stop() SIGKILLs it, which
kills everything left in the namespace. `unshare` pins the namespace at FILE, and containers
join it by that path. Other pods pay nothing for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from runtime import libc

INIT = Path(__file__).with_name("podinit.py")
READY = b"ready\n"  # what podinit.py writes to its log once SIGTERM/SIGCHLD are blocked
PIN = "pid"


class PidInitError(Exception):
    """The pod's pid 1 did not come up."""


def _is_pinned(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


async def start(directory: Path, timeout: float = 10.0) -> str:
    """Start the pod's init detached from berthd (it must outlive a daemon restart)."""
    directory.mkdir(parents=True, exist_ok=True)
    pin = directory / PIN
    pin.touch()
    log = directory / "init.log"  # not a pipe: the detached init would hold it open forever
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            "setsid", "--fork", "unshare", f"--pid={pin}", "--kill-child", sys.executable, "-S",
            str(INIT), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=err)
        await proc.wait()
    deadline = time.monotonic() + timeout
    # The pin is mounted before unshare forks the init: wait for the init itself, or a stop
    # right after the start could find no process to kill and the init would outlive its pin.
    while not (_is_pinned(pin) and READY in log.read_bytes()):
        if proc.returncode != 0 or time.monotonic() > deadline:
            stop(directory)
            raise PidInitError(f"pod init did not start: {log.read_text().strip()}")
        await asyncio.sleep(0.002)
    return str(pin)


def _members(pin: Path) -> list[int]:
    """Host pids whose pid namespace is the pinned one, its init (pid 1 inside) first."""
    want = os.stat(pin).st_ino
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == want:
                    found.append(int(entry))
    return sorted(found, key=lambda pid: not _is_ns_init(pid))


def _is_ns_init(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("NSpid:"):
                return line.split()[-1] == "1"
    return False


def stop(directory: Path, timeout: float = 5.0) -> None:
    """SIGKILL the init (the kernel then kills the namespace), wait, unpin; idempotent.

    Not SIGTERM: a pod stopped right after it started (a host-network pod has no CNI step to
    wait for) met an init that had not yet blocked SIGTERM, and pid 1 of a namespace drops a
    signal it has no handler for, so every such stop waited out the whole timeout. The init
    has nothing to clean up, and SIGKILL from the parent namespace always lands."""
    pin = directory / PIN
    if not pin.exists():
        return
    if _is_pinned(pin):
        members = _members(pin)
        for pid in members[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _members(pin) and time.monotonic() < deadline:
            time.sleep(0.005)
        for pid in _members(pin):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            libc.umount2(str(pin), libc.MNT_DETACH)
    for path in (pin, directory / "init.log"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
