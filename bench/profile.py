"""Where berth's pod-start time goes: py-spy over berthd (and children) and the monitor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.env import Env, daemon_pids
from bench.harness import Plan
from bench.pods import pod_cycle

PY_SPY = Path(sys.executable).parent / "py-spy"


# event-loop and thread plumbing: in every stack, so it says nothing about where time goes
_PLUMBING = {"base_events.py", "runners.py", "events.py", "threading.py", "<frozen runpy>",
             "daemon.py", "__main__.py"}


def _frame(f: str) -> str:
    """`func (path/to/file.py:12)` → `func (file.py)`; a child process → its program name."""
    if f.startswith("process "):
        cmd = f.partition(":")[2].strip('"() ').split()
        prog = next((os.path.basename(a) for a in cmd[1:] if not a.startswith("-")), "?")
        return f"[process {prog}]"
    name, _, where = f.partition(" (")
    return f"{name} ({os.path.basename(where.split(':')[0])})"


def _plumbing(frame: str) -> bool:
    return frame.startswith("<module>") or frame.rsplit("(", 1)[-1].rstrip(")") in _PLUMBING


def summarize(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed-stack output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"{raw.name}: no samples\n"
    lines = [f"{raw.name}: {total} samples (idle threads excluded)", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    useful = [(f, n) for f, n in incl.most_common() if not _plumbing(f)][:top]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in useful]
    return "\n".join(lines) + "\n"


def profile_pod_cycles(env: Env, plan: Plan, out: Path) -> None:
    """Extra berth pod cycles (not in the table) under py-spy; writes profile-*.txt to out."""
    if not PY_SPY.exists():
        print(f"bench: no {PY_SPY} (pip install py-spy): profile skipped", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    d = env.berthd
    assert d.proc is not None
    targets = {"berthd": d.proc.pid}
    targets |= {f"helper-{p}": p for p in daemon_pids(env.berth) if p != d.proc.pid}
    spies = {}
    for name, pid in targets.items():
        raw = out / f"profile-{name}.raw"
        cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
               "--rate", "250", "--subprocesses", "--nonblocking"]
        spies[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                       raw)
    try:
        for _ in range(max(plan.n, 5)):
            pod_cycle(env.berth, env.workdir / "logs")
    finally:
        for proc, _raw in spies.values():
            proc.send_signal(signal.SIGINT)
        for proc, _raw in spies.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = ""
    for _proc, raw in spies.values():
        if raw.exists():
            text += summarize(raw) + "\n"
    (out / "profile.txt").write_text(text)
    print(f"bench: profile in {out}/profile.txt", file=sys.stderr)
