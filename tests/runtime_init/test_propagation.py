"""runtime.propagation against real mounts: which mount holds a path, and the volume checks."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import propagation
from tests.fixtures.hostclean import unmount_all


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "m dir"  # a space: mountinfo escapes it as \040
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "berth-prop", str(d)], check=True)
    try:
        yield d
    finally:
        unmount_all(d)


def _make(kind: str, d: Path) -> None:
    subprocess.run(["mount", f"--make-{kind}", str(d)], check=True)


def test_mount_of_finds_the_innermost_mount(tmpfs: Path) -> None:
    (tmpfs / "sub").mkdir()
    assert propagation.mount_of(str(tmpfs / "sub")).mount_point == str(tmpfs)
    assert propagation.mount_of(str(tmpfs.parent)).mount_point != str(tmpfs)


def test_bidirectional_needs_a_shared_source(tmpfs: Path) -> None:
    _make("private", tmpfs)
    with pytest.raises(propagation.PropagationError, match="not a shared mount"):
        propagation.check_source(str(tmpfs), "rshared")
    with pytest.raises(propagation.PropagationError, match="neither a shared nor a slave"):
        propagation.check_source(str(tmpfs), "rslave")
    propagation.check_source(str(tmpfs), "rprivate")
    _make("shared", tmpfs)
    propagation.check_source(str(tmpfs), "rshared")
    propagation.check_source(str(tmpfs), "rslave")
    assert propagation.mount_of(str(tmpfs)).shared


def test_slave_source_allows_host_to_container_only(tmpfs: Path) -> None:
    _make("shared", tmpfs)
    inner = tmpfs.parent / "slave"
    inner.mkdir()
    subprocess.run(["mount", "--bind", str(tmpfs), str(inner)], check=True)
    try:
        _make("slave", inner)
        entry = propagation.mount_of(str(inner))
        assert entry.slave and not entry.shared
        propagation.check_source(str(inner), "rslave")
        with pytest.raises(propagation.PropagationError):
            propagation.check_source(str(inner), "rshared")
    finally:
        unmount_all(inner)
