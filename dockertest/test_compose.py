"""docker-compose 1.29 (Debian's) runs the three-service app of `compose_app/` on every daemon:
`web` built from a local Dockerfile with a published port and a health check, `writer` that
fetches `web` by service name and appends to a named volume, `gate` held back until `web` is
healthy; all on a user network declared in the file, every value from an env file.

Each step's observable outcome is asserted the same way on both daemons: up -d, ps, logs,
exec, restart, down (the volume's data survives), a second up, down -v (the volume is gone).
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockertest.harness import Daemon, wait_for

COMPOSE = "/usr/bin/docker-compose"
APP = Path(__file__).resolve().parent / "compose_app"
SERVICES = ["gate", "web", "writer"]


def free_subnet() -> str:
    """A 10.96.N.0/24 with no route yet: no other fixture or test uses 10.96/16."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                            check=True).stdout
    for third in range(1, 255):
        if f"10.96.{third}." not in routes:
            return f"10.96.{third}.0/24"
    raise RuntimeError("no free 10.96.N.0/24 subnet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class App:
    """The compose project on one daemon: its name, env file and published port."""

    dk: Daemon
    project: str
    env_file: Path
    port: int

    def compose(self, *args: str, check: bool = True,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**self.dk.env(), "COMPOSE_PROJECT_NAME": self.project,
               "COMPOSE_DOCKER_CLI_BUILD": "0", "HOME": str(self.dk.workdir)}
        res = subprocess.run(
            [COMPOSE, "--env-file", str(self.env_file), "-f", str(APP / "docker-compose.yml"),
             "--ansi", "never", *args], env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def ids(self) -> dict[str, str]:
        """service -> container id, of the project's containers (running or not)."""
        out = {}
        for c in self.dk.api.containers(all=True, filters={
                "label": f"com.docker.compose.project={self.project}"}):
            out[c["Labels"]["com.docker.compose.service"]] = c["Id"]
        return out

    def volume(self) -> str:
        return f"{self.project}_data"

    def network(self) -> str:
        return f"{self.project}_appnet"

    def page(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as resp:
            return str(resp.read().decode())

    def log_lines(self) -> list[str]:
        """The lines `writer` appended to the volume, read through `exec`."""
        return self.compose("exec", "-T", "writer", "cat", "/data/log").stdout.splitlines()


@pytest.fixture
def app(dk: Daemon, tmp_path: Path) -> Iterator[App]:
    project = f"dtc{dk.name}{uuid.uuid4().hex[:6]}"
    env_file = tmp_path / "app.env"
    port = free_port()
    env_file.write_text(f"BASE_IMAGE={dk.busybox}\nWEB_PORT={port}\nSUBNET={free_subnet()}\n"
                        f"GREETING=hello-{project}\n")
    a = App(dk, project, env_file, port)
    yield a
    a.compose("down", "-v", "--rmi", "local", "-t", "1", check=False)


def _healthy(app: App) -> bool:
    info = app.dk.api.inspect_container(app.ids()["web"])
    return bool(info["State"].get("Health", {}).get("Status") == "healthy")


def _running(app: App) -> set[str]:
    return {s for s, cid in app.ids().items()
            if app.dk.api.inspect_container(cid)["State"]["Running"]}


def test_compose_app_lifecycle(app: App) -> None:
    dk = app.dk
    app.compose("up", "-d")
    assert _running(app) == set(SERVICES)
    # gate waited for web's health check: web was healthy before gate started
    web = dk.api.inspect_container(app.ids()["web"])
    gate = dk.api.inspect_container(app.ids()["gate"])
    assert web["State"]["Health"]["Status"] == "healthy"
    assert gate["State"]["StartedAt"] > web["State"]["StartedAt"]
    assert app.page() == "hello from web\n"
    # the user network of the file, with the three containers on it
    net = dk.api.inspect_network(app.network())
    assert net["IPAM"]["Config"][0]["Subnet"] == app.env_file.read_text().split(
        "SUBNET=")[1].split()[0]
    assert {n for n in dk.api.inspect_container(app.ids()["writer"])["NetworkSettings"][
        "Networks"]} == {app.network()}
    vol = dk.api.inspect_volume(app.volume())
    assert vol["Labels"]["com.docker.compose.project"] == app.project

    ps = app.compose("ps").stdout
    for svc in SERVICES:
        line = next(ln for ln in ps.splitlines() if ln.startswith(f"{app.project}_{svc}_1"))
        assert " Up" in line, ps
    assert f"127.0.0.1:{app.port}->8080/tcp" in ps
    assert sorted(app.compose("ps", "--services").stdout.split()) == SERVICES
    assert len(app.compose("ps", "-q").stdout.split()) == 3

    wait_for(lambda: "hello from web" in app.compose("logs", "writer").stdout, 60,
             "writer's log")
    assert "gate open" in app.compose("logs", "--no-color", "gate").stdout
    greeting = f"hello-{app.project}"
    assert wait_for(app.log_lines, 30, "the writer's line") == [greeting]
    # exec: by service name and by the alias the file gives web
    assert app.compose("exec", "-T", "writer", "wget", "-q", "-O", "-",
                       "http://web:8080/").stdout == "hello from web\n"
    assert app.compose("exec", "-T", "gate", "wget", "-q", "-O", "-",
                       "http://www:8080/").stdout == "hello from web\n"
    assert app.compose("exec", "-T", "web", "sh", "-c", "exit 3", check=False).returncode == 3

    before = app.ids()
    app.compose("restart", "-t", "1", "writer")
    assert app.ids() == before  # the same containers, started again
    assert wait_for(lambda: len(app.log_lines()) == 2 and app.log_lines(), 60,
                    "the writer's second line") == [greeting] * 2

    app.compose("down", "-t", "1")
    assert app.ids() == {}
    assert app.network() not in {n["Name"] for n in dk.api.networks()}
    assert app.volume() in {v["Name"] for v in dk.api.volumes()["Volumes"] or []}

    app.compose("up", "-d")
    assert _running(app) == set(SERVICES)
    wait_for(lambda: _healthy(app), 60, "web healthy again")
    assert wait_for(lambda: len(app.log_lines()) == 3 and app.log_lines(), 60,
                    "the writer's third line") == [greeting] * 3  # the volume kept its data
    assert app.page() == "hello from web\n"

    app.compose("down", "-v", "-t", "1")
    assert app.ids() == {}
    assert app.volume() not in {v["Name"] for v in dk.api.volumes()["Volumes"] or []}
    assert app.network() not in {n["Name"] for n in dk.api.networks()}
    assert not [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if app.project in ln]
