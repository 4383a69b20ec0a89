"""berthd killed with SIGKILL and restarted: same pods and containers, correct states."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import remove_all_pods, run_container, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(240)


def _status(cli, cid):
    return cli.runtime.ContainerStatus(cli.pb.ContainerStatusRequest(container_id=cid),
                                       timeout=10).status


def test_sigkill_restart_keeps_pods_and_reports_exits(berthd_fn: Berthd,
                                                      e2e_images: dict[str, PushedImage],
                                                      tmp_path):
    img = e2e_images["busybox"].ref
    cli = berthd_fn.client()
    pb = cli.pb
    pods, sleepers = [], []
    for i in range(10):
        cfg = sandbox_config(cli, f"rec{i}", str(tmp_path / f"logs{i}"))
        pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)\
            .pod_sandbox_id
        pods.append(pod_id)
        sleepers.append(run_container(cli, pod_id, cfg, img, ["sleep", "600"], "sleeper"))
    # One container exits with code 3 while berthd is down.
    cfg0 = sandbox_config(cli, "rec-exit", str(tmp_path / "logs-exit"))
    exit_pod = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg0), timeout=60)\
        .pod_sandbox_id
    quitter = run_container(cli, exit_pod, cfg0, img, ["sh", "-c", "sleep 2; exit 3"], "quitter")
    ips = {p: cli.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=p),
                                           timeout=10).status.network.ip for p in pods}

    berthd_fn.kill()
    time.sleep(3)
    berthd_fn.start()
    cli = berthd_fn.client()

    listed = {p.id: p for p in cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(),
                                                          timeout=10).items}
    assert set(pods) | {exit_pod} == set(listed)
    assert all(p.state == pb.SANDBOX_READY for p in listed.values())
    for p in pods:
        st = cli.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=p),
                                          timeout=10).status
        assert st.network.ip == ips[p]
    for cid in sleepers:
        assert _status(cli, cid).state == pb.CONTAINER_RUNNING
    st = _status(cli, quitter)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 3, "Error")
    res = cli.runtime.ExecSync(pb.ExecSyncRequest(container_id=sleepers[0], cmd=["echo", "hi"],
                                                  timeout=10), timeout=20)
    assert res.stdout == b"hi\n"
    assert len(remove_all_pods(cli)) == 11


def test_interrupted_creation_is_rolled_back(berthd_fn: Berthd, tmp_path):
    """A pod record without its completion marker (as a kill mid-RunPodSandbox leaves) is
    removed with its namespaces and network at the next start."""
    cli = berthd_fn.client()
    pb = cli.pb
    cfg = sandbox_config(cli, "half", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)\
        .pod_sandbox_id
    berthd_fn.kill()
    import sqlite3

    db = sqlite3.connect(berthd_fn.state_dir / "metadata.db")
    db.execute("UPDATE pods SET extra = '{}', state = 'SANDBOX_NOTREADY' WHERE id = ?",
               (pod_id,))
    db.commit()
    db.close()
    berthd_fn.start()
    cli = berthd_fn.client()
    assert cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items == []
    with pytest.raises(grpc.RpcError) as info:
        cli.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                                     timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (berthd_fn.run_dir / "pods" / pod_id).exists()
    # The name is free again: the reservation went with the half-made pod.
    cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
