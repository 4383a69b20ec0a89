"""Fixtures: a busybox rootfs and a private monitor per test, torn down with all it ran."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import spec as oci
from runtime.monitor import cg
from tests.runtime_monitor.syncclient import SyncMonitorClient, ensure_monitor_sync

BUSYBOX = "/bin/busybox"


def spawner() -> str:
    """runtime.init unless the environment names another spawner module."""
    return os.environ.get("BERTH_MONITOR_SPAWNER", "runtime.init")


def build_rootfs(root: Path) -> Path:
    """A static busybox with hard-linked applets (symlinks could be masked with the binary)."""
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc"):
        (root / d).mkdir(parents=True)
    for name, minor in (("null", 3), ("zero", 5)):
        os.mknod(root / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            os.link(root / "bin" / "busybox", root / "bin" / name)
    return root


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    return build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def spec(*args: str, terminal: bool = False) -> dict[str, Any]:
    """The OCI config runtime.spec writes for runc, minus the network namespace (not needed)."""
    return oci.default_spec("rootfs", list(args), terminal=terminal,
                            namespaces=("pid", "ipc", "uts", "mount"))


def proc(*args: str) -> dict[str, Any]:
    """OCI process for an exec."""
    return spec(*args)["process"]


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] != b"Z"


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Poll until pid has exited (or is a zombie of someone else)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


class MonitorHandle:
    """A monitor on private dirs, plus the means to restart or kill it."""

    def __init__(self, base: Path) -> None:
        self.state_dir = str(base / "state")
        self.run_dir = str(base / "run")
        self.client: SyncMonitorClient | None = None
        self.pid = 0

    def connect(self) -> SyncMonitorClient:
        """ensure_monitor: starts one when none answers."""
        if self.client is not None:
            self.client.close()
        self.client = ensure_monitor_sync(self.state_dir, self.run_dir, spawner())
        self.pid = int(self.client.ping()["pid"])
        return self.client

    def cleanup(self) -> None:
        """Stop and delete every container, then shut down the monitor we started."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                for st in self.client.list():
                    self.client.stop(st.id, 0)
                    self.client.delete(st.id)
            self.pid = int(self.client.ping()["pid"])
            self.client.shutdown()
            self.client = None
        assert not pid_alive(self.pid), "monitor still running after shutdown"


@pytest.fixture
def mon(tmp_path: Path) -> Any:
    """A fresh monitor per test."""
    handle = MonitorHandle(tmp_path)
    handle.connect()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def cgroup_parent() -> Any:
    """A uniquely named parent cgroup in every hierarchy, removed with its children."""
    if not cg.available():
        pytest.skip("runtime.cgroups is not available")
    name = f"berth-test-mon-{uuid.uuid4().hex[:8]}"
    yield name
    for base in Path("/sys/fs/cgroup").iterdir():
        if (base / name).is_dir():
            for child in (base / name).iterdir():
                if child.is_dir():
                    child.rmdir()
            (base / name).rmdir()
