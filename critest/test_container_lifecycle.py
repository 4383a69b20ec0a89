"""Container RPCs as upstream critest's container spec exercises them."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.harness import Pod
from critest.util import (
    container_config,
    create,
    exec_sync,
    list_containers,
    sh,
    status,
    wait_exited,
    wait_trapped,
)
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def busybox(pulled: list[str], e2e_images: dict[str, PushedImage]) -> str:
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    return ref


def test_create_start_stop_remove_with_list_filters(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    cfg = container_config(cri, busybox, ["sleep", "600"], "life", labels={"role": "life"},
                           annotations={"a": "b"})
    cid = create(cri, pod.id, pod.config, cfg, start=False)
    other = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sleep", "600"], "o",
                                                              labels={"role": "other"}))
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_CREATED
    assert st.created_at > 0 and st.started_at == 0
    assert st.metadata.name == "life" and dict(st.annotations) == {"a": "b"}
    assert st.image.image and st.image_ref
    state = pb.ContainerStateValue
    assert list_containers(cri, id=cid) == [cid]
    assert list_containers(cri, id=cid[:12]) == [cid]
    assert sorted(list_containers(cri, pod_sandbox_id=pod.id)) == sorted([cid, other])
    assert list_containers(cri, pod_sandbox_id=pod.id, label_selector={"role": "life"}) == [cid]
    assert list_containers(cri, pod_sandbox_id=pod.id,
                           state=state(state=pb.CONTAINER_CREATED)) == [cid]
    assert list_containers(cri, pod_sandbox_id=pod.id,
                           state=state(state=pb.CONTAINER_RUNNING)) == [other]

    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_RUNNING and st.started_at >= st.created_at
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_EXITED and st.finished_at >= st.started_at
    assert list_containers(cri, pod_sandbox_id=pod.id,
                           state=state(state=pb.CONTAINER_EXITED)) == [cid]
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    assert list_containers(cri, id=cid) == []
    with pytest.raises(grpc.RpcError) as err:
        status(cri, cid)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("script", "code", "reason"),
                         [("exit 0", 0, "Completed"), ("exit 3", 3, "Error")])
def test_exit_code_and_reason(busybox: str, pod: Pod, script: str, code: int,
                              reason: str) -> None:
    cri = pod.cri
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sh", "-c", script], "x"))
    st = wait_exited(cri, cid)
    assert (st.state, st.exit_code, st.reason) == (cri.pb.CONTAINER_EXITED, code, reason)


def test_stop_timeout_then_sigkill(busybox: str, pod: Pod) -> None:
    """A container that ignores SIGTERM is killed when the timeout runs out: 137, not earlier."""
    cri, pb = pod.cri, pod.cri.pb
    script = "trap '' TERM; echo ready; while true; do sleep 1; done"
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sh", "-c", script], "k"))
    wait_trapped(cri, cid, signal.SIGTERM)  # a SIGTERM before the trap would kill it (143)
    t0 = time.monotonic()
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
    took = time.monotonic() - t0
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_EXITED
    assert st.exit_code == 137
    assert 1.5 <= took < 20, took


def test_stop_delivers_sigterm(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    script = "trap 'exit 42' TERM; while true; do sleep 0.1; done"
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sh", "-c", script], "t"))
    wait_trapped(cri, cid, signal.SIGTERM)
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=30), timeout=60)
    st = status(cri, cid)
    assert (st.exit_code, st.reason) == (42, "Error")


def test_exec_sync_output_and_timeout(busybox: str, pod: Pod) -> None:
    cri = pod.cri
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sleep", "600"], "e"))
    res = exec_sync(cri, cid, ["echo", "hello"])
    assert (res.stdout, res.stderr, res.exit_code) == (b"hello\n", b"", 0)
    res = exec_sync(cri, cid, ["sh", "-c", "echo oops >&2; exit 5"])
    assert (res.stdout, res.stderr, res.exit_code) == (b"", b"oops\n", 5)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(cri, cid, ["sleep", "37"], timeout=1)
    assert time.monotonic() - t0 < 10
    assert err.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)
    assert "sleep 37" not in sh(cri, cid, "ps -o args")  # the timed-out process was killed


def test_exec_sync_in_stopped_container_fails(busybox: str, pod: Pod) -> None:
    cri = pod.cri
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["true"], "s"))
    wait_exited(cri, cid)
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(cri, cid, ["true"])
    assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNKNOWN)


def test_command_args_env_workdir(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    cfg = container_config(cri, busybox, ["sh", "-c"], "env",
                           args=['echo "$GREETING $0" > /tmp/out; exec sleep 600', "arg0"],
                           envs=[pb.KeyValue(key="GREETING", value="hi there")],
                           working_dir="/var/tmp")
    cid = create(cri, pod.id, pod.config, cfg)
    assert sh(cri, cid, "cat /tmp/out") == "hi there arg0\n"
    assert sh(cri, cid, "pwd") == "/var/tmp\n"
    assert "GREETING=hi there" in sh(cri, cid, "env")


def test_volume_mounts(busybox: str, pod: Pod, tmp_path: Path) -> None:
    """Host dirs (also through a symlink) appear at their container path; readonly holds."""
    cri, pb = pod.cri, pod.cri.pb
    host = tmp_path / "vol"
    host.mkdir()
    (host / "flag").write_text("from host\n")
    link = tmp_path / "vol-link"
    link.symlink_to(host)
    mounts = [pb.Mount(host_path=str(host), container_path="/data"),
              pb.Mount(host_path=str(link), container_path="/via-link"),
              pb.Mount(host_path=str(host), container_path="/ro", readonly=True)]
    cfg = container_config(cri, busybox, ["sleep", "600"], "vol", mounts=mounts)
    cid = create(cri, pod.id, pod.config, cfg)
    assert sh(cri, cid, "cat /data/flag /via-link/flag") == "from host\nfrom host\n"
    sh(cri, cid, "echo written > /data/new")
    assert (host / "new").read_text() == "written\n"
    assert exec_sync(cri, cid, ["sh", "-c", "echo x > /ro/other"]).exit_code != 0
    assert {m.container_path for m in status(cri, cid).mounts} >= {"/data", "/via-link", "/ro"}


V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()  # a pure cgroup2 node


def _cgroup_value(pod: Pod, cid: str, controller: str, v1_name: str, v2_name: str) -> str:
    """The container's cgroup file read on the node, found through its pid (verbose info).

    The first word of it: v2's cpu.max holds "quota period", v1's cfs_quota_us the quota only.
    """
    req = pod.cri.pb.ContainerStatusRequest(container_id=cid, verbose=True)
    pid = json.loads(pod.cri.runtime.ContainerStatus(req, timeout=10).info["info"])["pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if V2 and not controllers:
            file = Path(f"/sys/fs/cgroup{path}") / v2_name
        elif not V2 and controller in controllers.split(","):
            file = Path(f"/sys/fs/cgroup/{controller}{path}") / v1_name
        else:
            continue
        return file.read_text().split()[0]
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def _memory_limit(pod: Pod, cid: str) -> str:
    return _cgroup_value(pod, cid, "memory", "memory.limit_in_bytes", "memory.max")


def _cpu_quota(pod: Pod, cid: str) -> str:
    return _cgroup_value(pod, cid, "cpu", "cpu.cfs_quota_us", "cpu.max")


def test_update_container_resources(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    res = pb.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                     memory_limit_in_bytes=256 * 1024 * 1024)
    cid = create(cri, pod.id, pod.config,
                 container_config(cri, busybox, ["sleep", "600"], "res", resources=res))
    assert _memory_limit(pod, cid) == str(256 * 1024 * 1024)
    assert _cpu_quota(pod, cid) == "50000"
    # v2 has no shares: kubelet's formula, 1 + ((shares - 2) * 9999) / 262142
    want = str(1 + (512 - 2) * 9999 // 262142) if V2 else "512"  # 20 on v2
    assert _cgroup_value(pod, cid, "cpu", "cpu.shares", "cpu.weight") == want
    new = pb.LinuxContainerResources(cpu_period=100000, cpu_quota=20000,
                                     memory_limit_in_bytes=128 * 1024 * 1024)
    cri.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=cid, linux=new), timeout=30)
    assert _memory_limit(pod, cid) == str(128 * 1024 * 1024)
    assert _cpu_quota(pod, cid) == "20000"


def test_oom_killed_reason(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    res = pb.LinuxContainerResources(memory_limit_in_bytes=16 * 1024 * 1024)
    script = "x=a; while true; do x=$x$x; done"
    cid = create(cri, pod.id, pod.config,
                 container_config(cri, busybox, ["sh", "-c", script], "oom", resources=res))
    st = wait_exited(cri, cid, timeout=60)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


def test_cgroup_visible_inside(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    res = pb.LinuxContainerResources(memory_limit_in_bytes=64 * 1024 * 1024)
    cid = create(cri, pod.id, pod.config,
                 container_config(cri, busybox, ["sleep", "600"], "cg", resources=res))
    limit = sh(cri, cid, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                         "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip()
    assert limit == str(64 * 1024 * 1024)


def test_stop_kills_execs_then_remove_succeeds(busybox: str, pod: Pod) -> None:
    """An ExecSync in flight ends with 137 once StopContainer returns, and the first
    RemoveContainer right after it succeeds (a few tries: tests/cri/test_stop.py does 50)."""
    cri, pb = pod.cri, pod.cri.pb
    main = "trap 'exit 0' TERM; sleep 600 >/dev/null 2>&1 & wait"
    busy = "touch /tmp/exec-started; while :; do sleep 0.05; done"
    for i in range(3):
        cid = create(cri, pod.id, pod.config,
                     container_config(cri, busybox, ["sh", "-c", main], f"busy{i}"))
        result: list[Any] = []
        thread = threading.Thread(target=lambda c=cid, out=result: out.append(
            exec_sync(cri, c, ["sh", "-c", busy], timeout=120)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while exec_sync(cri, cid, ["test", "-e", "/tmp/exec-started"]).exit_code != 0:
            assert time.monotonic() < deadline, "the busy exec never started"
            time.sleep(0.05)
        cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10),
                                  timeout=60)
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
        thread.join(30)
        assert result and result[0].exit_code == 137, result


def test_stop_abandoned_by_its_client(busybox: str, pod: Pod) -> None:
    """A client deadline (1 s) shorter than the stop timeout (4 s): DEADLINE_EXCEEDED, and the
    runtime drops the stop, so a container ignoring SIGTERM is still running after 5 s."""
    cri, pb = pod.cri, pod.cri.pb
    script = "trap '' TERM; while true; do sleep 1; done"
    cid = create(cri, pod.id, pod.config, container_config(cri, busybox, ["sh", "-c", script], "a"))
    wait_trapped(cri, cid, signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as err:
        cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=4), timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(5)
    assert status(cri, cid).state == pb.CONTAINER_RUNNING
    assert sh(cri, cid, "echo alive").strip() == "alive"
