"""python -m bench [--quick] [--out DIR] [--only a,b] [--profile]: berth vs containerd (and
dockerd for the Docker path), one run."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.buildbench import build_path
from bench.compose_bench import compose_path
from bench.docker_bench import docker_path
from bench.env import environment
from bench.harness import Plan
from bench.metrics import Metric, cold_pull, exec_sync, lifecycle
from bench.netbench import cni_add
from bench.overlaybench import overlay
from bench.population import population
from bench.sharedpid import shared_pid_memory
from bench.startbench import container_start
from bench.stats import Row

# order matters: the pull runs while no container pins the busybox base layer
METRICS: dict[str, Metric] = {
    "pull": cold_pull,
    "lifecycle": lifecycle,
    "exec": exec_sync,
    "population": population,
    "sharedpid": shared_pid_memory,
    "cni": cni_add,
    "overlay": overlay,
    "start": container_start,
    "docker": docker_path,  # Docker API path vs a private dockerd 20.10, docker CLI as client
    "build": build_path,  # classic builds and a push, same peer and client
    "compose": compose_path,  # docker-compose 1.29 up -d of dockertest/compose_app, same peer
}
RESULTS = Path(__file__).resolve().parent / "results"


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few samples (CI: proves it runs)")
    ap.add_argument("--out", type=Path, help="results dir (default bench/results/<date-time>)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(METRICS)}")
    ap.add_argument("--profile", action="store_true",
                    help="afterwards, py-spy berthd, its children and the monitor per phase")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    only = [m for m in args.only.split(",") if m]
    unknown = set(only) - set(METRICS)
    if unknown:
        print(f"unknown metrics {sorted(unknown)}; known: {','.join(METRICS)}", file=sys.stderr)
        return 2
    plan = Plan.quick() if args.quick else Plan()
    started = datetime.now(UTC)
    out = args.out or RESULTS / started.strftime("%Y-%m-%d-%H%M")
    rows: list[Row] = []
    failed = False
    t0 = time.monotonic()
    load0 = os.getloadavg()  # was the machine otherwise idle? (2 cores here)
    with environment(Path(tempfile.mkdtemp(prefix="berth-bench-"))) as env:
        print(f"bench: setup took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        for name, metric in METRICS.items():
            if only and name not in only:
                continue
            t1 = time.monotonic()
            try:
                rows += metric(env, plan)
            except Exception as e:  # one broken benchmark must not hide the others
                failed = True
                traceback.print_exc()
                rows.append(Row(name, "-", [], [], None, note=f"FAILED: {type(e).__name__}: {e}"))
            print(f"bench: {name} took {time.monotonic() - t1:.1f} s", file=sys.stderr,
                  flush=True)
        if args.profile:
            from bench.profile import profile_berth

            profile_berth(env, plan, out)
    meta = {"date": started.isoformat(timespec="seconds"),
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "quick": args.quick, "host": platform.node(), "kernel": platform.release(),
            "wall_s": round(time.monotonic() - t0, 1), "plan": plan.__dict__}
    report.write(rows, out, meta)
    print(report.table(rows))
    print(f"\nresults: {out}/results.json, {out}/results.png ({meta['wall_s']} s; load "
          f"average {load0[0]:.1f} at start, {meta['loadavg_end'][0]:.1f} at end)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
