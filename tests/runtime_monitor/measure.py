"""Monitor figures (not a test): `.venv/bin/python -m tests.runtime_monitor.measure [N]`.

Prints the monitor's RSS with 30 running containers, create+start+wait latency of /bin/true and
exec_sync latency of `true`, each as p50/p90 over N runs (default 100). Needs root.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from runtime.monitor import cg
from tests.runtime_monitor.conftest import MonitorHandle, build_rootfs, proc, spec


def rss_kib(pid: int) -> int:
    """VmRSS of pid."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(samples: list[float]) -> str:
    """p50/p90 in ms."""
    q = statistics.quantiles(samples, n=10)
    return f"p50 {statistics.median(samples) * 1000:.1f} ms, p90 {q[8] * 1000:.1f} ms"


def main() -> None:
    """Run the three measurements on a private monitor, then clean up."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    parent = f"berth-measure-{uuid.uuid4().hex[:8]}" if cg.available() else ""
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = str(build_rootfs(Path(tmp) / "rootfs"))
        mon = MonitorHandle(Path(tmp))
        c = mon.connect()
        try:
            idle = rss_kib(mon.pid)
            for i in range(30):
                c.create(f"s{i}", spec("sleep", "600"), rootfs,
                         cgroup_path=f"{parent}/s{i}" if parent else "",
                         log_path=f"{tmp}/s{i}.log")
                c.start(f"s{i}")
            busy = rss_kib(mon.pid)
            print(f"monitor RSS idle {idle / 1024:.1f} MiB; with 30 running containers "
                  f"{busy / 1024:.1f} MiB = {busy / 30 / 1024:.2f} MiB per container "
                  f"(marginal {(busy - idle) / 30:.0f} KiB per container)")
            execs = []
            for _ in range(n):
                t0 = time.perf_counter()
                c.exec_sync("s0", proc("true"), 10)
                execs.append(time.perf_counter() - t0)
            print(f"exec_sync true: {pct(execs)} (n={n})")
            for i in range(30):
                c.stop(f"s{i}", 0)
                c.delete(f"s{i}")
            runs, deletes = [], []
            for i in range(n):
                cid = f"t{i}"
                t0 = time.perf_counter()
                c.create(cid, spec("true"), rootfs, cgroup_path=f"{parent}/{cid}" if parent else "",
                         log_path=f"{tmp}/{cid}.log")
                c.start(cid)
                c.wait(cid)
                t1 = time.perf_counter()
                c.delete(cid)
                runs.append(t1 - t0)
                deletes.append(time.perf_counter() - t1)
            print(f"create+start+wait /bin/true: {pct(runs)}; delete {pct(deletes)} (n={n}, "
                  f"cgroup {'yes' if parent else 'no'})")
        finally:
            mon.cleanup()
            for base in Path("/sys/fs/cgroup").iterdir():
                if parent and (base / parent).is_dir():
                    os.rmdir(base / parent)


if __name__ == "__main__":
    main()
