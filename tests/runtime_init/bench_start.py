"""Start latency of /bin/true: Berth's runtime.init vs `runc run` and `crun run`, same bundle.

Usage (root): python tests/runtime_init/bench_start.py [N]
crun 1.8 refuses this hybrid cgroup layout, so its loop runs in a private mount namespace with
/sys/fs/cgroup/unified unmounted (see docs machine-facts).
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


def pct(xs: list[float]) -> str:
    qs = statistics.quantiles(xs, n=10)
    return f"p50 {statistics.median(xs) * 1e3:6.2f} ms  p90 {qs[8] * 1e3:6.2f} ms"


def berth(bundle: Path, n: int) -> list[float]:
    """Warm single-threaded process: spawn+start+waitpid each time."""
    spec = json.loads((bundle / "config.json").read_text())
    null = os.open(os.devnull, os.O_RDWR)
    out = []
    for _ in range(n + 3):
        t0 = time.perf_counter()
        code = init.run(spec, spec["root"]["path"], stdio=(null, null, null))
        out.append(time.perf_counter() - t0)
        assert code == 0, code
    return out[3:]


def oci(runtime: str, bundle: Path, n: int) -> list[float]:
    out = []
    for _ in range(n + 3):
        cid = f"berth-bench-{secrets.token_hex(4)}"
        t0 = time.perf_counter()
        subprocess.run([runtime, "run", "--bundle", str(bundle), cid], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out[3:]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--oci":  # inner loop for runc/crun
        print(json.dumps(oci(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    try:
        build_busybox_rootfs(tmp / "rootfs")
        spec = default_spec(str(tmp / "rootfs"), ["/bin/true"])
        (tmp / "config.json").write_text(json.dumps(spec))
        print(f"berth   {pct(berth(tmp, n))}")
        me = [sys.executable, __file__, "--oci"]
        for rt in ("runc", "crun"):
            if not shutil.which(rt):
                continue
            cmd = me + [rt, str(tmp), str(n)]
            if rt == "crun":
                cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh"] + cmd
            times = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                              text=True).stdout)
            print(f"{rt:7} {pct(times)}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
