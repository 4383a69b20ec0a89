"""Version, Status and RuntimeConfig: what kubelet asks a runtime before anything else."""

from __future__ import annotations

import pytest

from tests.fixtures.cri_client import CriClient

pytestmark = pytest.mark.timeout(60)


def test_version(cri: CriClient) -> None:
    v = cri.version()
    assert v.runtime_api_version == "v1"
    assert v.runtime_name
    assert v.runtime_version
    assert v.version


def test_status_conditions(cri: CriClient) -> None:
    resp = cri.runtime.Status(cri.pb.StatusRequest(), timeout=10)
    conds = {c.type: c for c in resp.status.conditions}
    assert {"RuntimeReady", "NetworkReady"} <= set(conds)
    assert conds["RuntimeReady"].status, conds["RuntimeReady"].message
    assert conds["NetworkReady"].status, conds["NetworkReady"].message
    assert not resp.info  # the info map is only for verbose requests


def test_status_verbose_info(cri: CriClient) -> None:
    resp = cri.runtime.Status(cri.pb.StatusRequest(verbose=True), timeout=10)
    assert resp.info
    assert all(isinstance(v, str) and v for v in resp.info.values())


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 predates the RuntimeConfig RPC (Kubernetes 1.28)",
    berth="reports the cgroup driver, cgroupfs on this host",
)
def test_runtime_config_cgroup_driver(cri: CriClient) -> None:
    resp = cri.runtime.RuntimeConfig(cri.pb.RuntimeConfigRequest(), timeout=10)
    assert resp.linux.cgroup_driver == cri.pb.CgroupDriver.CGROUPFS
