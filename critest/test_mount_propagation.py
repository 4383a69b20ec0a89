"""CRI mount propagation: Bidirectional both ways, HostToContainer host→container only.

Each test makes its own shared mount point (a tmpfs made rshared) as the hostPath, the way
kubelet's root dir is on a node, so the host's own (private) propagation never matters.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.util import container_config, create, sandbox, sh
from tests.fixtures.cri_client import CriClient
from tests.fixtures.hostclean import unmount_all
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs at a fresh dir, made rshared; everything under it unmounted afterwards."""
    d = tmp_path / "shared"
    d.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "critest-prop", str(d))
    try:
        _run("mount", "--make-rshared", str(d))
        yield d
    finally:
        unmount_all(d)


def _volume_pod(cri: CriClient, tmp_path: Path, ref: str, host: Path, prop: Any) -> Any:
    """A privileged container with `host` at /vol under `prop`; yields (ctx, container id)."""
    pb = cri.pb
    ctx = sandbox(cri, str(tmp_path / "logs"), name="prop", linux=pb.LinuxPodSandboxConfig(
        security_context=pb.LinuxSandboxSecurityContext(privileged=True)))
    pod_id, cfg = ctx.__enter__()
    try:
        cid = create(cri, pod_id, cfg, container_config(
            cri, ref, ["sleep", "600"], "vol",
            security=pb.LinuxContainerSecurityContext(privileged=True),
            mounts=[pb.Mount(container_path="/vol", host_path=str(host), propagation=prop)]))
    except BaseException:
        ctx.__exit__(None, None, None)
        raise
    return ctx, cid


def _host_mount(d: Path) -> None:
    """Mount a tmpfs holding a marker file at d (on the host)."""
    d.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "critest-host", str(d))
    (d / "marker").write_text("host")


def _seen_inside(cri: CriClient, cid: str, path: str) -> bool:
    """Propagation is synchronous in the kernel; the short retry only absorbs exec latency."""
    for _ in range(20):
        if sh(cri, cid, f"cat {path} 2>/dev/null || true").strip() == "host":
            return True
        time.sleep(0.1)
    return False


def test_bidirectional_both_ways(
    cri: CriClient, tmp_path: Path, shared_dir: Path, pulled: list[str],
    e2e_images: dict[str, PushedImage],
) -> None:
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    ctx, cid = _volume_pod(cri, tmp_path, ref, shared_dir,
                           cri.pb.MountPropagation.PROPAGATION_BIDIRECTIONAL)
    try:
        _host_mount(shared_dir / "from-host")
        assert _seen_inside(cri, cid, "/vol/from-host/marker")
        sh(cri, cid, "mkdir /vol/from-ctr && mount -t tmpfs none /vol/from-ctr && "
                     "echo ctr > /vol/from-ctr/marker")
        assert os.path.ismount(shared_dir / "from-ctr")
        assert (shared_dir / "from-ctr" / "marker").read_text().strip() == "ctr"
    finally:
        ctx.__exit__(None, None, None)


def test_host_to_container_one_way(
    cri: CriClient, tmp_path: Path, shared_dir: Path, pulled: list[str],
    e2e_images: dict[str, PushedImage],
) -> None:
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    ctx, cid = _volume_pod(cri, tmp_path, ref, shared_dir,
                           cri.pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)
    try:
        _host_mount(shared_dir / "from-host")
        assert _seen_inside(cri, cid, "/vol/from-host/marker")
        sh(cri, cid, "mkdir /vol/from-ctr && mount -t tmpfs none /vol/from-ctr && "
                     "echo ctr > /vol/from-ctr/marker")
        assert (shared_dir / "from-ctr").is_dir()  # the dir is on the shared tmpfs itself
        assert not os.path.ismount(shared_dir / "from-ctr")
        assert not (shared_dir / "from-ctr" / "marker").exists()
    finally:
        ctx.__exit__(None, None, None)


def test_private_mount_stays_private(
    cri: CriClient, tmp_path: Path, shared_dir: Path, pulled: list[str],
    e2e_images: dict[str, PushedImage],
) -> None:
    """The default (PRIVATE): host mounts made later do not appear inside."""
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    ctx, cid = _volume_pod(cri, tmp_path, ref, shared_dir,
                           cri.pb.MountPropagation.PROPAGATION_PRIVATE)
    try:
        _host_mount(shared_dir / "from-host")
        assert sh(cri, cid, "ls /vol/from-host").strip() == ""
    finally:
        ctx.__exit__(None, None, None)


def test_bidirectional_source_must_be_shared(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage],
) -> None:
    """A source on a private mount is refused with the path named, rather than half-working."""
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    private = tmp_path / "private"
    private.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "critest-priv", str(private))
    try:
        _run("mount", "--make-private", str(private))
        with pytest.raises(grpc.RpcError) as err:
            ctx, _ = _volume_pod(cri, tmp_path, ref, private,
                                 cri.pb.MountPropagation.PROPAGATION_BIDIRECTIONAL)
            ctx.__exit__(None, None, None)
        assert str(private) in (err.value.details() or "")  # type: ignore[attr-defined]
        assert "shared" in (err.value.details() or "")  # type: ignore[attr-defined]
    finally:
        unmount_all(private)
