"""Busybox rootfs (built once) and a runner that drives runtime.init in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("driver.py")
BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
alice:x:1000:
bob:x:1001:
wheel:x:10:alice,bob
audio:x:29:alice
nogroup:x:65534:
"""


def build_busybox_rootfs(root: Path) -> None:
    """/bin/busybox plus every applet as a HARD link, so masking one path never masks busybox."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "mnt",
              "root", "home/alice", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    listing = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in listing:
        dest = root / rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(root / "bin/busybox", dest)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/hostname").write_text("busybox\n")
    os.chmod(root / "tmp", 0o1777)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    root = tmp_path_factory.mktemp("bbroot") / "rootfs"
    build_busybox_rootfs(root)
    return root


@dataclass
class Result:
    """What the driver saw: container output, exit code, create/start error, exec exits."""

    stdout: str
    stderr: str
    data: dict[str, Any]

    @property
    def exit(self) -> int | None:
        return self.data.get("exit")

    @property
    def error(self) -> str | None:
        return self.data.get("error")


@pytest.fixture
def run_container(tmp_path: Path):
    """Run one request through the driver process; returns a Result."""
    counter = [0]

    def _run(req: dict[str, Any], timeout: float = 30) -> Result:
        counter[0] += 1
        rq = tmp_path / f"req{counter[0]}.json"
        rs = tmp_path / f"res{counter[0]}.json"
        rq.write_text(json.dumps(req))
        p = subprocess.run([sys.executable, str(DRIVER), str(rq), str(rs)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0 or not rs.exists():
            raise AssertionError(f"driver failed rc={p.returncode}\n{p.stdout}\n{p.stderr}")
        return Result(p.stdout, p.stderr, json.loads(rs.read_text()))

    return _run
