"""One Docker daemon under test: its socket, a docker-py client and the Debian docker CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from tests.fixtures.waits import until

DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client; /usr/local/bin/docker is a newer one


@dataclass
class Daemon:
    """A Docker API endpoint and the images pushed for the suite (logical name -> ref)."""

    name: str  # "berth" or "dockerd" (or a name given with --docker-host)
    host: str  # unix:///path/docker.sock
    images: dict[str, str]
    workdir: Path
    pid: int | None = None  # the daemon's process, when the suite started it (fd checks)
    client: docker.DockerClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = docker.DockerClient(base_url=self.host, timeout=120, version="1.41")

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    @property
    def busybox(self) -> str:
        return self.images["busybox"]

    def env(self) -> dict[str, str]:
        """Environment for the docker CLI: this daemon only, a private client config."""
        cfg = self.workdir / "cli-config"
        cfg.mkdir(parents=True, exist_ok=True)
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(cfg), "DOCKER_BUILDKIT": "0",
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # fmt: skip

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run /usr/bin/docker against this daemon; raise with its stderr unless check=False."""
        res = subprocess.run(
            [DOCKER_CLI, *args], env=self.env(), input=input, capture_output=True, text=True,
            timeout=timeout, check=False, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {res.returncode}\nstdout: {res.stdout}\n"
                f"stderr: {res.stderr}"
            )
        return res

    def output(self, cmd: list[str], **create: Any) -> bytes:
        """Run a container to its end and return its stdout.

        dockerd can answer logs right after wait before its log copier has flushed the last
        bytes of a short-lived container, so the (non-empty) output is polled for.
        """
        c = self.client.containers.run(self.busybox, cmd, detach=True, **create)
        try:
            c.wait(timeout=120)
            return bytes(wait_for(lambda: c.logs(stdout=True, stderr=False), 10,
                                  f"output of {cmd}"))  # fmt: skip
        finally:
            c.remove(force=True)

    def container_ids(self) -> set[str]:
        """Every container the daemon knows, running or not."""
        return {c["Id"] for c in self.api.containers(all=True)}

    def remove_all(self) -> None:
        """Force-remove every container (the daemon is private to the suite)."""
        for cid in self.container_ids():
            with suppress(docker.errors.NotFound):
                self.api.remove_container(cid, force=True, v=True)

    def open_fds(self) -> int | None:
        """How many fds the daemon holds now (None for a daemon the suite did not start)."""
        if self.pid is None:
            return None
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def close(self) -> None:
        self.client.close()


def wait_for(probe: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until probe() returns something truthy and return it; fail saying what was awaited."""
    return until(probe, timeout, every, what)


def cgroup_file(daemon: Daemon, cid: str, controller: str, name: str) -> str:
    """Read a cgroup v1 file of a running container, found through its init's /proc entry."""
    pid = daemon.api.inspect_container(cid)["State"]["Pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return (Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name).read_text()
    raise AssertionError(f"container {cid[:12]} has no {controller} cgroup")
