"""RuntimeDefault follows Docker's capability rules: a granted capability opens its syscalls."""

from __future__ import annotations

from pathlib import Path

import pytest

from critest.util import container_config, create, exec_sync, sandbox
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def _hostname_attempt(cri: CriClient, tmp_path: Path, ref: str, add: list[str]) -> tuple[int, str]:
    """Runs `hostname NEW` in a RuntimeDefault container with `add` capabilities; (code, output)."""
    pb = cri.pb
    sec = pb.LinuxContainerSecurityContext(
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.ProfileType.RuntimeDefault),
        capabilities=pb.Capability(add_capabilities=add))
    with sandbox(cri, str(tmp_path / "logs"), name="seccap") as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "h",
                                                        security=sec))
        res = exec_sync(cri, cid, ["sh", "-c", "hostname renamed-by-test && hostname"])
        return res.exit_code, (res.stdout + res.stderr).decode()


def test_sys_admin_opens_sethostname_under_runtime_default(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """Without CAP_SYS_ADMIN the profile refuses sethostname; with it, the call goes through."""
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    code, out = _hostname_attempt(cri, tmp_path, ref, [])
    assert code != 0 and "not permitted" in out, out
    code, out = _hostname_attempt(cri, tmp_path, ref, ["SYS_ADMIN"])
    assert code == 0 and out.strip() == "renamed-by-test", out
