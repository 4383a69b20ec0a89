"""Every RPC of both services fed malformed requests: exact status, the field named, no crash."""

from __future__ import annotations

import grpc
import pytest

from tests.badinput.corpus import CASES, Case
from tests.badinput.env import Env

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(env: Env, case: Case) -> None:
    code, details, resp = env.call(case.service, case.rpc, env.fill(case.request))
    _forget_created(env, resp)
    if case.pending and code == grpc.StatusCode.UNIMPLEMENTED:
        pytest.xfail(f"berth: {case.pending}")
    assert code.name == case.code, f"{case.rpc}: {code.name} {details!r}"
    for word in case.mentions:
        assert env.fill(word).lower() in details.lower(), f"{details!r} should name {word}"


def _forget_created(env: Env, resp: object) -> None:
    """A bad request that was wrongly accepted must not leave its object behind."""
    pb, rt = env.client.pb, env.client.runtime
    pod_id = getattr(resp, "pod_sandbox_id", "") if isinstance(resp, pb.RunPodSandboxResponse) \
        else ""
    if pod_id:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    if isinstance(resp, pb.CreateContainerResponse) and resp.container_id:
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=resp.container_id), timeout=60)


def test_every_rpc_is_in_the_corpus() -> None:
    from proto import api_pb2

    names: set[tuple[str, str]] = set()
    for svc in api_pb2.DESCRIPTOR.services_by_name.values():
        names |= {(svc.name, m.name) for m in svc.methods}
    covered = {("RuntimeService" if c.service == "runtime" else "ImageService", c.rpc)
               for c in CASES}
    missing = names - covered - {("RuntimeService", "GetContainerEvents")}
    assert not missing


def test_zz_daemon_alive_and_nothing_half_created(env: Env) -> None:
    """Runs last in this module: the daemon answers, and once our objects go, nothing stays."""
    assert env.client.version().runtime_name
    assert env.berthd.proc is not None and env.berthd.proc.poll() is None
    env.remove_everything()
    pb, rt = env.client.pb, env.client.runtime
    assert not rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items
    assert not rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers
    assert env.leftovers() == []
