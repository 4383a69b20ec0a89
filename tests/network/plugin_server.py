"""Start and stop private plugin servers for tests, and find any that outlived their test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def server_pids(socket_path: str) -> list[int]:
    """Processes whose command line names this socket (servers and their workers)."""
    found = []
    needle = socket_path.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_for(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def start_server(socket_path: str) -> subprocess.Popen[bytes]:
    """--idle: should the test run be killed before its teardown, the server still goes away."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_plugins.server", "--socket", socket_path, "--idle", "600"],
        stdin=subprocess.DEVNULL,
    )
    if not wait_for(lambda: os.path.exists(socket_path) or proc.poll() is not None):
        proc.kill()
        proc.wait()
        raise RuntimeError("plugin server did not come up")
    return proc


def stop_server(proc: subprocess.Popen[bytes], socket_path: str) -> None:
    """TERM and reap; the socket file must be gone with it."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert not os.path.exists(socket_path), "server left its socket behind"


def kill_by_lock(socket_path: str) -> None:
    """Stop an autostarted server (pid in its lock file) and wait until it is gone."""
    try:
        with open(socket_path + ".lock") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid and pid in server_pids(socket_path):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: pid not in server_pids(socket_path), 10)
