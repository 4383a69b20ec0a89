"""StopContainer stops everything in the container's cgroup, and a stop the client gave up on."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.util import wait_trapped
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(600)
# The exec is busy: it forks a child every 50 ms, so a kill that does not freeze the cgroup
# first can miss a fresh child; it writes a marker first so the test knows it runs.
BUSY = "touch /tmp/exec-started; while :; do sleep 0.05; done"
# The main process leaves on SIGTERM at once, so a stop takes the "exited in time" path, which
# is where exec'd processes used to be forgotten; its child keeps no stdio pipe open (one that
# did would make the monitor kill the cgroup after the output grace anyway).
MAIN = "trap 'exit 0' TERM; sleep 600 >/dev/null 2>&1 & wait"


def _procs(cid: str) -> list[int]:
    procs = Path("/sys/fs/cgroup/pids/berth", cid, "cgroup.procs")
    return [int(p) for p in procs.read_text().split()] if procs.exists() else []


class Pod:
    """One pod (shared or private pid namespace) and the calls the loop below repeats."""

    def __init__(self, cli: CriClient, ref: str, log_dir: Path, pid_mode: int) -> None:
        self.cli, self.pb, self.ref = cli, cli.pb, ref
        self.opts = self.pb.NamespaceOption(pid=pid_mode)
        linux = self.pb.LinuxPodSandboxConfig(security_context=self.pb.LinuxSandboxSecurityContext(
            namespace_options=self.opts))
        self.cfg = sandbox_config(cli, "stopall", str(log_dir), linux=linux)
        self.id = cli.runtime.RunPodSandbox(self.pb.RunPodSandboxRequest(config=self.cfg),
                                            timeout=30).pod_sandbox_id

    def start(self, name: str, script: str) -> str:
        pb = self.pb
        sec = pb.LinuxContainerSecurityContext(namespace_options=self.opts)
        ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                  image=pb.ImageSpec(image=self.ref), command=["sh", "-c", script],
                                  linux=pb.LinuxContainerConfig(security_context=sec))
        cid = self.cli.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=self.id, config=ccfg, sandbox_config=self.cfg),
            timeout=30).container_id
        self.cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
        return str(cid)

    def exec_in_background(self, cid: str) -> tuple[threading.Thread, list[Any]]:
        """A busy ExecSync running in a thread once this returns; its result lands in the list."""
        pb = self.pb
        out: list[Any] = []

        def run() -> None:
            try:
                out.append(self.cli.runtime.ExecSync(pb.ExecSyncRequest(
                    container_id=cid, cmd=["sh", "-c", BUSY], timeout=120), timeout=150))
            except grpc.RpcError as exc:
                out.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while self.cli.runtime.ExecSync(pb.ExecSyncRequest(
                container_id=cid, cmd=["test", "-e", "/tmp/exec-started"], timeout=10),
                timeout=20).exit_code != 0:
            assert time.monotonic() < deadline, "the busy exec never started"
            time.sleep(0.05)
        return t, out

    def close(self) -> None:
        self.cli.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=self.id),
                                        timeout=60)
        self.cli.runtime.RemovePodSandbox(
            self.pb.RemovePodSandboxRequest(pod_sandbox_id=self.id), timeout=60)


@pytest.fixture
def ref(berthd: Berthd, e2e_images: dict[str, PushedImage]) -> str:
    cli = berthd.client()
    image = e2e_images["busybox"].ref
    cli.image.PullImage(cli.pb.PullImageRequest(image=cli.pb.ImageSpec(image=image)), timeout=60)
    return image


@pytest.mark.parametrize("pid_mode, tries", [("POD", 50), ("CONTAINER", 10)])
def test_stop_kills_execs_and_remove_follows_at_once(berthd: Berthd, ref: str, tmp_path: Path,
                                                     pid_mode: str, tries: int) -> None:
    """An ExecSync in flight ends with 137 by the time StopContainer returns, the cgroup is
    empty, and the very next RemoveContainer succeeds (it used to fail with EBUSY)."""
    cli = berthd.client()
    pb = cli.pb
    pod = Pod(cli, ref, tmp_path / "logs", getattr(pb, pid_mode))
    try:
        for i in range(tries):
            cid = pod.start(f"c{i}", MAIN)
            thread, result = pod.exec_in_background(cid)
            assert _procs(cid), "the test looks for the container's cgroup in the wrong place"
            cli.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10),
                                      timeout=60)
            assert _procs(cid) == [], f"try {i}: processes left after StopContainer"
            cli.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
            thread.join(30)
            assert not thread.is_alive(), f"try {i}: the ExecSync never returned"
            assert not isinstance(result[0], Exception), result[0]
            assert result[0].exit_code == 137, f"try {i}: exec exit {result[0].exit_code}"
    finally:
        pod.close()


def test_stop_abandoned_by_its_client_leaves_the_container_running(
        berthd: Berthd, ref: str, tmp_path: Path) -> None:
    """The client's deadline (1 s) is shorter than the stop timeout (4 s): the call ends with
    DEADLINE_EXCEEDED and the stop is abandoned, so a container that ignores SIGTERM is still
    running after the timeout would have passed; a later stop with a deadline to match ends it."""
    cli = berthd.client()
    pb = cli.pb
    pod = Pod(cli, ref, tmp_path / "logs", pb.CONTAINER)
    try:
        cid = pod.start("stubborn", "trap '' TERM; sleep 600 & wait; sleep 600")
        wait_trapped(cli, cid, signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as err:
            cli.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=4),
                                      timeout=1)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(5)
        status = cli.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                             timeout=10).status
        assert status.state == pb.CONTAINER_RUNNING
        assert _procs(cid), "the abandoned stop killed the container anyway"
        cli.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1),
                                  timeout=30)
        status = cli.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                             timeout=10).status
        assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 137)
        assert _procs(cid) == []
    finally:
        pod.close()
