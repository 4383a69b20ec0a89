"""Unfiltered ListContainerStats / ListPodSandboxStats answers are reused for
`stats.list_max_age` while no pod, container or state changed; filtered and single calls
always read the cgroup files. Berth only: containerd 1.6 reads on every call.

The berthd here keeps answers for 600 s, so "reused" and "read again" are told apart by the
cpu timestamps alone, with no timing in the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures._proc import wait_until
from tests.fixtures.berthd import BERTHD, Berthd, run_berthd
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.timeout(180)

SLEEP = ["sh", "-c", "sleep 600"]


@pytest.fixture(scope="module")
def reuse_berthd(tmp_path_factory: pytest.TempPathFactory,
                 registry: Registry) -> Iterator[Berthd]:
    if not BERTHD.exists():
        pytest.skip(f"{BERTHD} not installed")
    with run_berthd(Path(tmp_path_factory.mktemp("reuse")) / "b",
                    registry={"insecure": [registry.host]},
                    stats={"list_max_age": 600.0}) as d:
        yield d


def _start(cli: CriClient, pod: str, cfg: Any, image: str, name: str) -> str:
    pb = cli.pb
    c = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                           image=pb.ImageSpec(image=image), command=SLEEP, log_path=f"{name}.log")
    cid = cli.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=c, sandbox_config=cfg), timeout=60).container_id
    cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return str(cid)


def test_unfiltered_lists_are_reused_until_something_changes(
        reuse_berthd: Berthd, e2e_images: dict[str, Any], tmp_path: Path) -> None:
    cli = reuse_berthd.client()
    pb, rt = cli.pb, cli.runtime
    image = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
    cfg = sandbox_config(cli, "reuse", str(tmp_path))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    try:
        a = _start(cli, pod, cfg, image, "a")

        def listed() -> dict[str, int]:
            stats = rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=30).stats
            return {s.attributes.id: s.cpu.timestamp for s in stats}

        def pod_ts() -> int:
            stats = rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=30).stats
            return int(stats[0].linux.cpu.timestamp)

        # Two answers in a row are the same one (a late state event for the start may still
        # renew it once: that is a change, so only the first pair is waited for).
        seen = [listed()]

        def repeated() -> bool:
            seen.append(listed())
            return seen[-1] == seen[-2]

        wait_until(repeated, 30, "two unfiltered answers in a row to be the same")
        first = seen[-1]
        assert set(first) == {a} and first[a] > 0
        one = rt.ListContainerStats(pb.ListContainerStatsRequest(
            filter=pb.ContainerStatsFilter(id=a)), timeout=30).stats
        assert one[0].cpu.timestamp > first[a]  # filtered: read at the call
        single = rt.ContainerStats(pb.ContainerStatsRequest(container_id=a), timeout=30).stats
        assert single.cpu.timestamp > one[0].cpu.timestamp
        pods = [pod_ts()]

        def pod_repeated() -> bool:
            pods.append(pod_ts())
            return pods[-1] == pods[-2]

        wait_until(pod_repeated, 30, "two unfiltered pod answers in a row to be the same")
        pods_first = pods[-1]

        b = _start(cli, pod, cfg, image, "b")  # a new container: read again at once
        second = listed()
        assert set(second) == {a, b} and second[a] > first[a]
        assert pod_ts() > pods_first
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
