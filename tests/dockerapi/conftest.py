"""docker-py against berthd's Docker API socket; images come from the loopback registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import pytest


@pytest.fixture(scope="session")
def dclient(berthd) -> Iterator[docker.DockerClient]:
    """docker-py 7 on berthd's socket, API version negotiated from /version as it does."""
    client = docker.DockerClient(base_url=f"unix://{berthd.docker_socket}", timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox(dclient, e2e_images) -> str:
    """The test busybox, pulled through the Docker API (so pulls are exercised too)."""
    ref = e2e_images["busybox"].ref
    dclient.images.pull(ref)
    return ref


@pytest.fixture
def cleanup(dclient) -> Iterator[list[str]]:
    """Names or ids of containers a test made; force-removed afterwards whatever happened."""
    made: list[str] = []
    yield made
    for c in made:
        with contextlib.suppress(docker.errors.NotFound):
            dclient.api.remove_container(c, force=True)
