"""SIGKILL of the node monitor under running containers: berthd answers, reports, recovers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, run_container, sandbox_config
from tests.fixtures.images import PushedImage
from tests.soak.leaks import monitor_pid

pytestmark = pytest.mark.timeout(180)
BOUND = 15.0  # no RPC may take longer than this after the monitor died


def _gone(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return data[data.rindex(")") + 2] == "Z"


def kill_monitor(d: Berthd) -> int:
    """SIGKILL the monitor named in monitor.lock and wait until it is gone."""
    pid = monitor_pid(d)
    assert pid > 0
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"monitor {pid} survived SIGKILL"
        time.sleep(0.02)
    return pid


def every_read_rpc(cli: CriClient, pod: str, cids: list[str]) -> dict[str, float]:
    """Each read-side RPC once, with a hard deadline; returns seconds per RPC."""
    pb, rt = cli.pb, cli.runtime
    calls = {
        "Version": lambda: cli.version(timeout=BOUND),
        "Status": lambda: rt.Status(pb.StatusRequest(), timeout=BOUND),
        "ListPodSandbox": lambda: rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=BOUND),
        "PodSandboxStatus": lambda: rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=BOUND),
        "ListContainers": lambda: rt.ListContainers(pb.ListContainersRequest(), timeout=BOUND),
        "ContainerStatus": lambda: rt.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cids[0]), timeout=BOUND),
        "ListContainerStats": lambda: rt.ListContainerStats(
            pb.ListContainerStatsRequest(), timeout=BOUND),
        "ListImages": lambda: cli.image.ListImages(pb.ListImagesRequest(), timeout=BOUND),
    }
    took = {}
    for name, call in calls.items():
        t0 = time.monotonic()
        try:
            call()
        except grpc.RpcError as e:  # an error is an answer; a deadline is not
            assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{name} hung"
        took[name] = time.monotonic() - t0
    return took


def test_monitor_sigkill_reports_exits_and_recovers(berthd_fn: Berthd,
                                                    e2e_images: dict[str, PushedImage],
                                                    tmp_path: Path):
    cli = berthd_fn.client()
    pb, rt = cli.pb, cli.runtime
    img = e2e_images["busybox"].ref
    cfg = sandbox_config(cli, "monkill", str(tmp_path))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    cids = [run_container(cli, pod, cfg, img, ["sleep", "3600"], n) for n in ("a", "b")]
    old = kill_monitor(berthd_fn)

    took = every_read_rpc(cli, pod, cids)
    print("RPC seconds after monitor SIGKILL:", {k: round(v, 3) for k, v in took.items()})
    assert max(took.values()) < BOUND
    for cid in cids:
        st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=BOUND).status
        assert st.state == pb.CONTAINER_EXITED, st
        assert st.reason == "MonitorLost", st
        assert st.message, "MonitorLost needs a message saying what happened"
        print(f"{cid[:12]}: {pb.ContainerState.Name(st.state)} {st.exit_code} {st.reason}: "
              f"{st.message}")
    # ExecSync into a dead container is an error, not a hang
    with pytest.raises(grpc.RpcError) as info:
        rt.ExecSync(pb.ExecSyncRequest(container_id=cids[0], cmd=["true"], timeout=5),
                    timeout=BOUND)
    assert info.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED

    new = monitor_pid(berthd_fn)
    assert new not in (0, old), "berthd did not start a new monitor"
    cid = run_container(cli, pod, cfg, img, ["sleep", "3600"], "c")
    out = rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["echo", "alive"], timeout=10),
                      timeout=BOUND)
    assert out.stdout == b"alive\n"
    pod2 = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config(
        cli, "monkill2", str(tmp_path))), timeout=60).pod_sandbox_id
    for p in (pod, pod2):
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p), timeout=60)
    assert rt.ListContainers(pb.ListContainersRequest(), timeout=BOUND).containers == []
