"""Fixtures for tests/runtime_security: real cgroups with random names, always removed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from runtime.cgroups import V1Driver

PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def v1() -> V1Driver:
    return V1Driver()


@pytest.fixture
def cg_root(v1: V1Driver) -> Iterator[str]:
    """A private top-level cgroup; everything below it is killed and removed afterwards."""
    top = f"berth-test-{uuid.uuid4().hex[:10]}"
    yield top
    for base in v1.hierarchies:
        tree = os.path.join(base, top)
        if not os.path.isdir(tree):
            continue
        for dirpath, _, _ in sorted(os.walk(tree), key=lambda w: -len(w[0])):
            rel = os.path.relpath(dirpath, base)
            if v1.exists(rel):
                v1.kill_all(rel)
            v1.remove(rel)
    assert not v1.exists(top), "test leaked a cgroup"


def spawn_waiting(code: str) -> subprocess.Popen[str]:
    """A Python child that blocks on stdin until the test has put it into a cgroup."""
    script = "import sys; sys.stdin.readline()\n" + code
    return subprocess.Popen(
        [PY, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
