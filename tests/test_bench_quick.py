"""`python -m bench --quick` end to end, so the benchmark code cannot rot (numbers not checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import METRICS

REPO = Path(__file__).resolve().parents[1]
NEEDS = ["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/docker-registry", "skopeo"]


@pytest.mark.timeout(600)  # every metric once, the Docker build and compose rows included
def test_bench_quick_writes_table_json_and_png(tmp_path: Path) -> None:
    missing = [t for t in NEEDS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")
    out = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=560, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert "| metric | unit | berth p50 |" in res.stdout
    data = json.loads((out / "results.json").read_text())
    failed = [r["metric"] for r in data["rows"] if r["note"].startswith("FAILED")]
    assert not failed, failed
    assert len(data["rows"]) >= len(METRICS)
    assert (out / "table.md").read_text().startswith("| metric")
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
