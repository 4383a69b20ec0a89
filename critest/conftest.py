"""CRI conformance suite: every test takes `cri` and runs once per runtime endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from critest.harness import Pod, Target
from tests.fixtures.cri_client import CriClient, sandbox_config

BUILTIN = ("berth", "containerd")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cri-endpoint",
        action="append",
        default=[],
        metavar="[NAME=]ENDPOINT",
        help="CRI socket to test, e.g. unix:///run/berth/berth.sock (repeatable). "
        "Without it, critest starts berthd and containerd itself and tests both.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "differs(runtime, reason, berth): skip on `runtime` (its Version().runtime_name) "
        "where it legitimately differs; `berth` says what Berth does instead",
    )
    config.addinivalue_line(
        "markers",
        "berth_pending(reason): on berth, an UNIMPLEMENTED answer makes the test xfail",
    )
    config.addinivalue_line(
        "markers",
        "xfail_berth(reason): a known Berth gap; strict xfail on the berth target only",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """xfail_berth becomes a strict xfail on berth: the day Berth passes, the mark must go."""
    for item in items:
        mark = item.get_closest_marker("xfail_berth")
        if mark is not None and _target_name(item) == "berth":
            item.add_marker(pytest.mark.xfail(strict=True, reason=mark.args[0]))


def targets(config: pytest.Config) -> list[Target]:
    """Endpoints from --cri-endpoint, else the two runtimes critest starts itself."""
    given = config.getoption("--cri-endpoint")
    if not given:
        return [Target(n) for n in BUILTIN]
    out = []
    for spec in given:
        name, sep, endpoint = spec.partition("=")
        if not sep or "://" in name:
            endpoint = spec
            name = Path(spec.split("://", 1)[-1]).stem
        out.append(Target(name, endpoint))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cri" in metafunc.fixturenames:
        ts = targets(metafunc.config)
        metafunc.parametrize("cri", ts, ids=[t.name for t in ts], indirect=True, scope="session")


@pytest.fixture(scope="session")
def cri(request: pytest.FixtureRequest) -> Iterator[CriClient]:
    """Stubs for one runtime; built-in targets start berthd/containerd on first use."""
    t: Target = request.param
    endpoint = t.endpoint
    if endpoint is None:
        endpoint = (
            request.getfixturevalue("berthd").endpoint
            if t.name == "berth"
            else request.getfixturevalue("containerd")
        )
    with CriClient(endpoint, t.name) as client:
        yield client


_runtime_names: dict[str, str] = {}


def runtime_name(cri: CriClient) -> str:
    """What the endpoint calls itself (Version().runtime_name), asked once per endpoint."""
    if cri.endpoint not in _runtime_names:
        _runtime_names[cri.endpoint] = cri.version().runtime_name
    return _runtime_names[cri.endpoint]


@pytest.fixture(autouse=True)
def _runtime_differences(request: pytest.FixtureRequest) -> None:
    """Apply @pytest.mark.differs: skip, saying why and what Berth does instead."""
    marks = list(request.node.iter_markers("differs"))
    if not marks or "cri" not in request.fixturenames:
        return
    name = runtime_name(request.getfixturevalue("cri"))
    for m in marks:
        if m.args[0] == name:
            pytest.skip(f"{name} differs: {m.kwargs['reason']} (Berth: {m.kwargs['berth']})")


def _target_name(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("cri") if callspec else None
    return target.name if isinstance(target, Target) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """berth_pending: Berth answering UNIMPLEMENTED is an expected failure, nothing else is."""
    outcome = yield
    mark = item.get_closest_marker("berth_pending")
    if mark is None or call.when != "call" or call.excinfo is None:
        return
    err = call.excinfo.value
    if (
        _target_name(item) == "berth"
        and isinstance(err, grpc.RpcError)
        and err.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    ):
        rep = outcome.get_result()  # type: ignore[attr-defined]
        rep.outcome = "skipped"
        rep.wasxfail = mark.args[0] if mark.args else "not implemented in Berth yet"


@pytest.fixture
def pod(cri: CriClient, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pod]:
    """A fresh pod sandbox, stopped and removed (with its containers) after the test."""
    config = sandbox_config(
        cri, request.node.name[:40].replace("[", "-").rstrip("]"), str(tmp_path / "pod-logs")
    )
    req = cri.pb.RunPodSandboxRequest(config=config)
    pod_id = cri.runtime.RunPodSandbox(req, timeout=120).pod_sandbox_id
    try:
        yield Pod(cri, pod_id, config)
    finally:
        cri.runtime.StopPodSandbox(cri.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        cri.runtime.RemovePodSandbox(
            cri.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60
        )


@pytest.fixture
def pulled(cri: CriClient) -> Iterator[list[str]]:
    """Refs a test pulled, removed afterwards; request it before `pod` so the pod goes first."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        req = cri.pb.RemoveImageRequest(image=cri.pb.ImageSpec(image=ref))
        try:
            cri.image.RemoveImage(req, timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
