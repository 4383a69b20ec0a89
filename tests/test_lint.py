"""The style bar as a test: ruff and mypy stay clean on every package, or CI says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ruff_clean(tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:]


def test_mypy_clean(tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "mypy"), "--cache-dir", str(tmp_path), "cri", "engine",
                          "berthd", "dockerapi", "runtime", "cni_plugins", "bench", "berthcli",
                          "dockertest",
                          "proto/generate.py"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
