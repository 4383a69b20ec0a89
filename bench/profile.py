"""Where berth's pod-start time goes: py-spy over berthd (and children) and the monitor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.env import Env, daemon_pids
from bench.harness import Peer, Plan
from bench.metrics import remove_image
from bench.pods import Pod, pod_cycle, pull, remove_pod, run_pod, start_container

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


@contextmanager
def spying(pids: dict[str, int], out: Path, phase: str) -> Iterator[list[Path]]:
    """py-spy (sampling, non-blocking, children included) on each pid while the block runs."""
    spies = []
    for name, pid in pids.items():
        raw = out / f"profile-{phase}-{name}.raw"
        cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
               "--rate", "250", "--subprocesses", "--nonblocking"]
        spies.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                      raw))
    time.sleep(0.5)  # attached before the work starts
    try:
        yield [raw for _p, raw in spies]
    finally:
        for proc, _raw in spies:
            proc.send_signal(signal.SIGINT)
        for proc, _raw in spies:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


Phase = tuple[Callable[[], object], Callable[[], object], Callable[[], object]]


def _phases(env: Env, plan: Plan) -> dict[str, Phase]:
    """phase → (setup, profiled work, teardown); berth only, after the measured run."""
    peer, logs = env.berth, env.workdir / "logs"
    pods: list[Pod] = []
    big = env.images["big"].ref

    def fill() -> None:
        for _ in range(plan.small):
            pod = run_pod(peer, logs)
            pods.append(pod)
            start_container(pod)

    def lists() -> None:
        pb, rt = peer.client.pb, peer.client.runtime
        for _ in range(plan.n * 5):
            rt.ListContainers(pb.ListContainersRequest(), timeout=30)
            rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)

    def empty() -> None:
        while pods:
            remove_pod(pods.pop())

    def execs() -> None:
        pb, rt = peer.client.pb, peer.client.runtime
        req = pb.ExecSyncRequest(container_id=pods[0].containers[0], cmd=["true"], timeout=10)
        for _ in range(plan.n * 3):
            rt.ExecSync(req, timeout=30)

    def pulls() -> None:
        for _ in range(max(1, plan.pulls - 1)):
            pull(peer, big)
            remove_image(peer, big)

    return {
        "pod-start": (none, lambda: [pod_cycle(peer, logs) for _ in range(plan.n)], none),
        "exec": (lambda: pods.append(_one(peer, logs)), execs, empty),
        "list": (fill, lists, empty),
        "pull": (lambda: remove_image(peer, big), pulls, none),
    }


def _helper(pid: int) -> str:
    """Name of a long-lived berth helper (short-lived ones come in through --subprocesses)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    for module, name in ((b"runtime.monitor", "monitor"), (b"cni_plugins.server", "cni-server")):
        if module in cmd:
            return name
    return ""


def none() -> None:
    """A phase step with nothing to do."""


def _one(peer: Peer, logs: Path) -> Pod:
    pod = run_pod(peer, logs)
    start_container(pod)
    return pod


def profile_berth(env: Env, plan: Plan, out: Path) -> None:
    """Profile each berth phase (not in the table) under py-spy; writes out/profile.txt."""
    if not PY_SPY.exists():
        print(f"bench: no {PY_SPY} (pip install py-spy): profile skipped", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    d = env.berthd
    assert d.proc is not None
    pids = {"berthd": d.proc.pid}
    text = ""
    for phase, (setup, work, teardown) in _phases(env, plan).items():
        setup()
        pids |= {name: p for p in daemon_pids(env.berth) if (name := _helper(p))}
        with spying(pids, out, phase) as raws:
            t0 = time.perf_counter()
            work()
            took = time.perf_counter() - t0
        teardown()
        text += f"## {phase} ({took:.1f} s wall)\n\n"
        summaries = [summarize(raw) for raw in raws if raw.exists()]
        text += "".join(t + "\n" for t in summaries if "no samples" not in t)
    (out / "profile.txt").write_text(text)
    print(f"bench: profile in {out}/profile.txt", file=sys.stderr)
