"""Measures seccomp compile time and cgroup v1 create+remove time (p50/p90 over N runs).

Run as root: .venv/bin/python -m tests.runtime_security.measure [N]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

from runtime.cgroups import Resources, V1Driver
from runtime.seccomp import compile_profile, default_profile


def _pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    compile_s = []
    for _ in range(n):
        t = time.perf_counter()
        bpf = compile_profile(default_profile())
        compile_s.append(time.perf_counter() - t)
    print(f"seccomp default profile: {len(bpf) // 8} insns, compile p50 "
          f"{_pct(compile_s, 50):.2f} ms p90 {_pct(compile_s, 90):.2f} ms")
    drv = V1Driver()
    top = f"berth-measure-{uuid.uuid4().hex[:8]}"
    res = Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                    memory_limit=64 << 20, pids_limit=100)
    cg_s = []
    try:
        for i in range(n):
            path = f"{top}/pod/ctr{i}"
            t = time.perf_counter()
            drv.create(path, res)
            drv.remove(path, remove_parents_up_to=top)
            cg_s.append(time.perf_counter() - t)
    finally:
        drv.remove(f"{top}/pod")
        drv.remove(top)
    print(f"cgroup v1 create+remove ({len(drv.hierarchies)} hierarchies, with limits): p50 "
          f"{_pct(cg_s, 50):.2f} ms p90 {_pct(cg_s, 90):.2f} ms")


if __name__ == "__main__":
    main()
