"""GetContainerEvents: the stream kubelet's evented PLEG relies on."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from critest.harness import Pod
from critest.util import container_config, create
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)


def _wait_live(cri: Any, pod: Pod, ref: str, seen: list[Any]) -> None:
    """Create (and remove) a throwaway container until its CREATED event shows on the stream.
    A client cannot see when the server registers its subscriber, and a fixed sleep loses that
    race on a loaded node; after this no later event can be missed."""
    pb = cri.pb
    for attempt in range(20):
        cid = create(cri, pod.id, pod.config,
                     container_config(cri, ref, ["true"], f"primer{attempt}"), start=False)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and not any(e.container_id == cid for e in seen):
            time.sleep(0.02)
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=30)
        if any(e.container_id == cid for e in seen):
            return
    raise AssertionError("the event stream showed none of 20 throwaway containers")


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 predates GetContainerEvents (implemented in 1.7)",
    berth="streams created/started/stopped/deleted events for containers and pod sandboxes",
)
def test_container_events(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]
) -> None:
    cri, pb = pod.cri, pod.cri.pb
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    stream = cri.runtime.GetContainerEvents(pb.GetEventsRequest(), timeout=60)
    seen: list[Any] = []

    def collect() -> None:
        try:
            for ev in stream:
                seen.append(ev)
        except grpc.RpcError as exc:  # the test cancels the stream when it is done
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        _wait_live(cri, pod, ref, seen)
        cid = create(cri, pod.id, pod.config, container_config(cri, ref, ["sleep", "600"], "ev"))
        cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=30)
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=30)
        wanted = ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT",
                  "CONTAINER_STOPPED_EVENT", "CONTAINER_DELETED_EVENT"]
        deadline = time.monotonic() + 10
        while True:
            mine = [pb.ContainerEventType.Name(e.container_event_type) for e in seen
                    if e.container_id == cid]
            if len(mine) >= len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert mine == wanted
        stamps = [e.created_at for e in seen if e.container_id == cid]
        assert stamps == sorted(stamps) and stamps[0] > 0
    finally:
        stream.cancel()
        reader.join(timeout=5)
