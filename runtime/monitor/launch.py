"""Starting the monitor from berthd, which is threaded: exec a launcher, never fork ourselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime.monitor.proto import MonitorError


def launch(state_dir: str, run_dir: str, spawner: str | None) -> None:
    """Start the monitor (the launcher forks the daemon and exits once it serves)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    cmd = [sys.executable, "-m", "runtime.monitor", "--state-dir", state_dir,
           "--run-dir", run_dir]
    if spawner:
        cmd += ["--spawner", spawner]
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(run_dir, "monitor.log"), "ab") as logf:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=logf, start_new_session=True, env=env, cwd="/",
                             timeout=60, check=False)
    if res.stdout.strip() == b"busy" and not os.path.exists(os.path.join(run_dir, "monitor.sock")):
        holder = Path(state_dir, "monitor.lock").read_text().strip()
        raise MonitorError(f"monitor pid {holder} holds {state_dir} with another run dir")
    if res.returncode != 0:
        tail = Path(run_dir, "monitor.log").read_bytes()[-2000:].decode(errors="replace")
        raise MonitorError(f"monitor failed to start (exit {res.returncode}): {tail}")
