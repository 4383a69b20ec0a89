"""Interop the other way round: containerd 1.6 wired with Berth's CNI plugins runs pods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.containerd import CONTAINERD, RUNC, run_containerd
from tests.fixtures.cri_client import CriClient, remove_all_pods, run_container, sandbox_config
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry
from tests.fixtures.waits import until

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[2]


def test_containerd_with_berth_plugins(tmp_path: Path, registry: Registry,
                                       e2e_images: dict[str, PushedImage]):
    if not CONTAINERD.exists() or not RUNC.exists():
        pytest.skip("containerd/runc not installed")
    bin_dir = tmp_path / "berth-cni"
    subprocess.run([sys.executable, "-m", "cni_plugins.install", str(bin_dir)], check=True,
                   cwd=REPO)
    img = e2e_images["busybox"].ref
    with run_containerd(tmp_path / "ctrd", [registry.host], e2e_images["pause"].ref,
                        cni_bin=bin_dir) as c, CriClient(c.endpoint, "containerd") as cli:
        pb = cli.pb
        pods = []
        for name in ("a", "b"):
            cfg = sandbox_config(cli, f"interop-{name}", str(tmp_path / f"logs-{name}"))
            pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                               timeout=60).pod_sandbox_id
            cid = run_container(cli, pod_id, cfg, img, ["sleep", "600"], "c")
            ip = cli.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                                              timeout=10).status.network.ip
            pods.append((pod_id, cid, ip))
        subnet_prefix = c.subnet.rsplit(".", 2)[0]
        assert all(ip.startswith(subnet_prefix) for _, _, ip in pods), (c.subnet, pods)
        # a listens (stdio detached: containerd's ExecSync waits for it), b connects over the
        # bridge our plugin built
        serve = "(echo hello | nc -l -p 7070 >/dev/null 2>&1 &) ; true"
        cli.runtime.ExecSync(pb.ExecSyncRequest(container_id=pods[0][1], cmd=["sh", "-c", serve],
                                                timeout=10), timeout=20)
        def hello() -> bool:  # refused until the background listener is up
            res = cli.runtime.ExecSync(pb.ExecSyncRequest(
                container_id=pods[1][1], cmd=["sh", "-c", f"nc {pods[0][2]} 7070 </dev/null"],
                timeout=10), timeout=20)
            return bool(res.stdout.strip() == b"hello")

        until(hello, 10, what="'hello' from the other pod")
        link = subprocess.run(["ip", "-o", "link", "show", "master", c.bridge],
                              capture_output=True, text=True).stdout
        assert link.count("veth") >= 2
        remove_all_pods(cli)
