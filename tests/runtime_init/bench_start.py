"""Start latency of /bin/true: Berth's runtime.init vs `runc run` and `crun run`, same bundle.

Usage (root): python tests/runtime_init/bench_start.py [N]
Runs interleaved (one of each per round) so background load hits all three alike. crun 1.8
refuses this hybrid cgroup layout, so everything runs in a private mount namespace with
/sys/fs/cgroup/unified unmounted (machine-facts).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime import init  # noqa: E402
from runtime.spec import default_spec  # noqa: E402
from tests.runtime_init.conftest import build_busybox_rootfs  # noqa: E402

_INNER = "BERTH_BENCH_INNER"


def pct(xs: list[float]) -> str:
    qs = statistics.quantiles(xs, n=10)
    return f"p50 {statistics.median(xs) * 1e3:6.2f} ms  p90 {qs[8] * 1e3:6.2f} ms"


def bench(n: int) -> dict[str, list[float]]:
    """n rounds of: Berth spawn+start+waitpid in this warm process, then runc, then crun."""
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    null = os.open(os.devnull, os.O_RDWR)
    runtimes = [rt for rt in ("runc", "crun") if shutil.which(rt)]
    out: dict[str, list[float]] = {"berth": [], **{rt: [] for rt in runtimes}}
    try:
        build_busybox_rootfs(tmp / "rootfs")
        spec = default_spec(str(tmp / "rootfs"), ["/bin/true"])
        (tmp / "config.json").write_text(json.dumps(spec))
        for i in range(n + 3):  # three warm-up rounds
            t0 = time.perf_counter()
            code = init.run(spec, spec["root"]["path"], stdio=(null, null, null))
            dt = time.perf_counter() - t0
            assert code == 0, code
            if i >= 3:
                out["berth"].append(dt)
            for rt in runtimes:
                cid = f"berth-bench-{secrets.token_hex(4)}"
                t0 = time.perf_counter()
                subprocess.run([rt, "run", "--bundle", str(tmp), cid], check=True,
                               stdin=null, stdout=null)
                if i >= 3:
                    out[rt].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    if not os.environ.get(_INNER):
        os.execvpe("unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c",
                               'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh",
                               sys.executable, __file__, str(n)], {**os.environ, _INNER: "1"})
    for name, times in bench(n).items():
        print(f"{name:6} {pct(times)}   (n={len(times)})")


if __name__ == "__main__":
    main()
