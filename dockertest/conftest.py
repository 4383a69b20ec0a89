"""Docker API suite: every test takes `docker_daemon` and runs once per daemon (berth, dockerd)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import docker
import pytest

from dockertest.harness import Daemon
from tests.fixtures.berthd import Berthd
from tests.fixtures.images import PushedImage

BUILTIN = ("berth", "dockerd")
NOT_MERGED = "Berth's Docker API is not merged yet"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--docker-host",
        action="append",
        default=[],
        metavar="NAME=unix://SOCKET",
        help="Docker API socket to test (repeatable). Without it, dockertest starts berthd and "
        "a private dockerd 20.10 itself and tests both.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "differs(daemon, reason, berth): skip on `daemon` where it legitimately differs; "
        "`berth` says what Berth does instead",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "docker_daemon" in metafunc.fixturenames:
        given = metafunc.config.getoption("--docker-host")
        params = [g.split("=", 1) for g in given] if given else [[n, ""] for n in BUILTIN]
        ids = [p[0] for p in params]
        metafunc.parametrize("docker_daemon", [tuple(p) for p in params], ids=ids,
                             indirect=True, scope="session")  # fmt: skip


def _berth_socket(request: pytest.FixtureRequest) -> Path:
    """The berthd fixture's Docker socket, or a skip while t14e's API is not in the tree."""
    declared = hasattr(Berthd, "docker_socket") or "docker_socket" in {
        f.name for f in dataclasses.fields(Berthd)
    }  # a property (like .socket) or a dataclass field: either way, t14e's code is in
    if not declared:
        pytest.skip(NOT_MERGED)
    berthd: Berthd = request.getfixturevalue("berthd")
    sock = getattr(berthd, "docker_socket", None)
    if sock is None or not Path(sock).exists():
        pytest.skip(NOT_MERGED)
    return Path(sock)


@pytest.fixture(scope="session")
def docker_daemon(
    request: pytest.FixtureRequest,
    e2e_images: dict[str, PushedImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Daemon]:
    """A daemon with the suite's images pulled; its containers are removed at the end."""
    name, host = request.param
    pid = None
    if not host:
        if name == "berth":
            host = f"unix://{_berth_socket(request)}"
            proc = request.getfixturevalue("berthd").proc
        else:
            host = request.getfixturevalue("dockerd").host
            proc = request.getfixturevalue("dockerd").dockerd
        pid = proc.pid if proc is not None else None
    images = {n: img.ref for n, img in e2e_images.items()}
    d = Daemon(name, host, images, tmp_path_factory.mktemp(f"dockertest-{name}"), pid)
    for key in ("busybox", "user-uid"):
        d.client.images.pull(images[key])
    try:
        yield d
    finally:
        d.remove_all()
        d.close()


@pytest.fixture(autouse=True)
def _daemon_differences(request: pytest.FixtureRequest) -> None:
    """Apply @pytest.mark.differs: skip, saying why and what Berth does instead."""
    marks = list(request.node.iter_markers("differs"))
    if not marks or "docker_daemon" not in request.fixturenames:
        return
    name = request.getfixturevalue("docker_daemon").name
    for m in marks:
        if m.args[0] == name:
            pytest.skip(f"{name} differs: {m.kwargs['reason']} (Berth: {m.kwargs['berth']})")


@pytest.fixture
def dk(docker_daemon: Daemon) -> Iterator[Daemon]:
    """The daemon, with every container a test left behind removed afterwards."""
    before = docker_daemon.container_ids()
    yield docker_daemon
    for cid in docker_daemon.container_ids() - before:
        with suppress(docker.errors.NotFound):
            docker_daemon.api.remove_container(cid, force=True, v=True)
