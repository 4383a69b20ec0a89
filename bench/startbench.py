"""Container start of /bin/true: Berth's runtime vs runc and crun on one bundle (bench_start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.env import Env
from bench.harness import Plan
from bench.stats import Row

REPO = Path(__file__).resolve().parents[1]
# crun 1.8 refuses the hybrid cgroup layout: a private mount ns without the empty v2 mount
_UNSHARE = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh"]
_CODE = ("import json, sys; from tests.runtime_init.bench_start import bench; "
         "print(json.dumps(bench(int(sys.argv[1]))))")


def container_start(env: Env, plan: Plan) -> list[Row]:
    """Runs tests/runtime_init/bench_start.py's interleaved rounds in a child; seconds → ms."""
    res = subprocess.run([*_UNSHARE, sys.executable, "-c", _CODE, str(plan.starts)],
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bench_start failed ({res.returncode}): {res.stderr[-2000:]}")
    got = {k: [v * 1000 for v in vs] for k, vs in json.loads(res.stdout.splitlines()[-1]).items()}
    name = "container start of /bin/true (create+start+wait)"
    note = "berth = runtime.init from a warm process; runc/crun = `run` from the CLI"
    rows = []
    for rt, target in (("crun", 1.0), ("runc", None)):
        if rt in got:
            rows.append(Row(name, "ms", got["berth"], got[rt], target, peer_name=rt,
                            note=note if rt == "crun" else ""))
        else:
            rows.append(Row(name, "ms", got["berth"], [], target, peer_name=rt,
                            note=f"skipped: {rt} not installed"))
    return rows
