"""CRI execs whose monitor session breaks for good (the monitor is SIGKILLed under them).

Neither ExecSync nor a streaming Exec may then claim an exit code: both fail, naming the
unknown status. containerd 1.6 does the same when the pod's shim is SIGKILLed under them
(measured once: the stream ends with a Failure status, InternalError, "failed while waiting
for exec ...: ttrpc: closed"; ExecSync is UNKNOWN with the same words). That is not a test
here: containerd then leaves a shim, a runc container and a rootfs mount behind for the
fixture to clean, so this is Berth's test only."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from critest.streamclient import remotecommand as rc
from tests.faults.test_monitor_kill import kill_monitor
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import run_container, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


def test_execs_lost_with_the_monitor_fail(berthd_fn: Berthd,
                                          e2e_images: dict[str, PushedImage], tmp_path: Path):
    cli = berthd_fn.client()
    pb, rt = cli.pb, cli.runtime
    cfg = sandbox_config(cli, "execlost", str(tmp_path))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    cid = run_container(cli, pod, cfg, e2e_images["busybox"].ref, ["sleep", "3600"], "c")
    url = rt.Exec(pb.ExecRequest(container_id=cid, cmd=["sh", "-c", "echo up; sleep 100"],
                                 stdout=True, stderr=True), timeout=10).url
    errors: list[grpc.RpcError] = []

    def exec_sync() -> None:
        try:
            rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "100"], timeout=60),
                        timeout=60)
        except grpc.RpcError as e:
            errors.append(e)

    async def stream() -> rc.Outcome:
        s = await rc.open_spdy(url)
        try:
            await s.read_until(b"up")
            sync = threading.Thread(target=exec_sync)
            sync.start()
            await asyncio.sleep(1.0)  # the ExecSync is under way
            await asyncio.to_thread(kill_monitor, berthd_fn)
            await asyncio.to_thread(sync.join, 30)
            return await s.wait(30)
        finally:
            await s.aclose()

    res = asyncio.run(stream())
    # before: a v4 "Success" status, which kubectl shows as exit 0
    assert res.exit_code is None and res.status and res.status["status"] == "Failure", res
    assert "exit status is unknown" in res.error, res
    assert len(errors) == 1 and errors[0].code() == grpc.StatusCode.UNKNOWN, errors
    assert "exit status is unknown" in str(errors[0].details()), errors[0].details()
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
