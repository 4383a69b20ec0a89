"""GetContainerEvents: a container that exits on its own still reaches subscribers."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import run_container, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)


def test_events_follow_a_container_through_its_life(berthd: Berthd,
                                                    e2e_images: dict[str, PushedImage],
                                                    tmp_path):
    cli = berthd.client()
    pb = cli.pb
    got: queue.Queue = queue.Queue()
    stream = cli.runtime.GetContainerEvents(pb.GetEventsRequest())

    def pump() -> None:
        try:
            for ev in stream:
                got.put(ev)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    cfg = sandbox_config(cli, "events", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    cid = run_container(cli, pod_id, cfg, e2e_images["busybox"].ref,
                        ["sh", "-c", "sleep 0.5; exit 7"], "quick")
    seen = []
    while "CONTAINER_STOPPED_EVENT" not in seen:
        ev = got.get(timeout=30)
        if ev.container_id == cid:
            seen.append(pb.ContainerEventType.Name(ev.container_event_type))
            last = ev
    assert seen == ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT",
                    "CONTAINER_STOPPED_EVENT"]
    assert last.containers_statuses[0].exit_code == 7
    assert last.pod_sandbox_status.id == pod_id
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    while True:
        ev = got.get(timeout=30)
        if ev.container_id == cid:
            assert ev.container_event_type == pb.CONTAINER_DELETED_EVENT
            break
    stream.cancel()
