"""A pod-wide pid namespace: the one case that needs a process, a tiny reaping pid 1.

A pid namespace dies with its init, so it cannot be held by a bind mount alone. Pods that share
one (kubelet's shareProcessNamespace) get a detached `unshare --pid=FILE --fork` whose child is
Debian's `catatonit -P` (a static C init in pause mode, ~0.7 MiB RSS against the ~9 MiB of a
Python interpreter): as pid 1 it reaps orphans (exec probes leave them) and exits on SIGTERM,
which kills everything left in the namespace. `unshare` pins the namespace at FILE, and
containers join it by that path. Other pods pay nothing for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from runtime import libc

INIT = "catatonit"
PIN = "pid"


class PidInitError(Exception):
    """The pod's pid 1 did not come up."""


def _is_pinned(path: Path) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == str(path) for line in fh)


async def start(directory: Path, timeout: float = 10.0) -> str:
    """Start the pod's init detached from berthd (it must outlive a daemon restart)."""
    init = shutil.which(INIT)
    if init is None:
        raise PidInitError(f"a pod-wide pid namespace needs {INIT} as its pid 1; it is not on "
                           "PATH (apt-get install catatonit, as deploy/install.sh does)")
    directory.mkdir(parents=True, exist_ok=True)
    pin = directory / PIN
    pin.touch()
    log = directory / "init.log"  # not a pipe: the detached init would hold it open forever
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            "setsid", "--fork", "unshare", f"--pid={pin}", "--kill-child", init, "-P",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err)
        await proc.wait()
    deadline = time.monotonic() + timeout
    # The pin is mounted before unshare forks the init: wait for the init itself, with its
    # signals taken, or a stop right after the start finds no process to kill (the init would
    # outlive its pin) or a pid 1 that ignores SIGTERM (the stop would wait out its bound).
    while not (_is_pinned(pin) and _ready(pin)):
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


def _ready(pin: Path) -> bool:
    """The namespace's init has SIGTERM blocked or caught (catatonit takes every signal through
    a signalfd), so a stop's SIGTERM reaches it."""
    members = _members(pin)
    if not members or not _is_ns_init(members[0]):
        return False
    with contextlib.suppress(OSError), open(f"/proc/{members[0]}/status") as fh:
        for line in fh:
            if line.startswith(("SigBlk:", "SigCgt:")) and int(line.split()[1], 16) >> (
                    signal.SIGTERM - 1) & 1:
                return True
    return False


def _is_ns_init(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("NSpid:"):
                return line.split()[-1] == "1"
    return False


def stop(directory: Path, timeout: float = 5.0) -> None:
    """SIGTERM the init (the kernel then kills the namespace), wait, unpin; idempotent."""
    pin = directory / PIN
    if not pin.exists():
        return
    if _is_pinned(pin):
        members = _members(pin)
        for pid in members[:1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
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
