"""Where the Docker socket is and how to reach it: -H, then DOCKER_HOST, then Berth's default."""

from __future__ import annotations

import os

import docker

DEFAULT_HOST = "unix:///run/berth/docker.sock"
API_VERSION = "1.41"  # Docker 20.10: what Berth serves at least; pinned so no version probe


def resolve_host(flag: str | None) -> str:
    """The socket the user asked for, in the precedence the docker CLI uses."""
    return flag or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def connect(host: str) -> docker.DockerClient:
    """A docker-py client with no read timeout: logs -f and attach stream for as long as needed."""
    return docker.DockerClient(base_url=host, version=API_VERSION, timeout=None)  # type: ignore[arg-type]
