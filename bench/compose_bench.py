"""The compose row: Debian's docker-compose 1.29 brings up the three-service app of
dockertest/compose_app/ on berthd's Docker socket and on a private dockerd, alternating sample
by sample in one run.

One sample is `docker-compose up -d` until it returns: `gate` waits for `web`'s health check,
so by then web is healthy and all three run (checked after each sample, untimed). The image is
built once per daemon beforehand; `down -v` after each sample is not timed.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import docker
import yaml

from bench.docker_bench import Side, berth_side
from bench.env import Env
from bench.harness import Plan, interleave, timed
from bench.stats import Row, percentile
from tests.fixtures.dockerd import run_dockerd

COMPOSE = "/usr/bin/docker-compose"
APP = Path(__file__).resolve().parents[1] / "dockertest" / "compose_app"


def _probe_interval_ms() -> float:
    """web's health-check interval from the app's compose file ("250ms", "1s")."""
    text = yaml.safe_load((APP / "docker-compose.yml").read_text())
    value = str(text["services"]["web"]["healthcheck"]["interval"])
    return float(value[:-2]) if value.endswith("ms") else float(value.rstrip("s")) * 1000


def _free_subnets(count: int) -> list[str]:
    """10.97.N.0/24s with no route yet: no test or fixture uses 10.97/16."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                            check=True).stdout
    free = [f"10.97.{n}.0/24" for n in range(1, 255) if f"10.97.{n}." not in routes]
    return free[:count]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class App:
    """The compose project on one daemon, with its own env file, port and subnet."""

    def __init__(self, side: Side, workdir: Path, base: str, subnet: str) -> None:
        self.side = side
        self.project = f"benchc{side.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.env_file = workdir / "app.env"
        self.env_file.write_text(f"BASE_IMAGE={base}\nWEB_PORT={_free_port()}\n"
                                 f"SUBNET={subnet}\nGREETING=bench\n")
        self.env = {"DOCKER_HOST": side.host, "DOCKER_CONFIG": str(workdir / "cli"),
                    "COMPOSE_PROJECT_NAME": self.project, "COMPOSE_DOCKER_CLI_BUILD": "0",
                    "DOCKER_BUILDKIT": "0", "HOME": str(workdir), "PATH": "/usr/bin:/bin"}

    def compose(self, *args: str) -> None:
        res = subprocess.run(
            [COMPOSE, "--env-file", str(self.env_file), "-f", str(APP / "docker-compose.yml"),
             "--ansi", "never", *args], env=self.env, capture_output=True, text=True,
            timeout=300, check=False, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"[{self.side.name}] docker-compose {' '.join(args)}: "
                               f"{res.stderr.strip()[-2000:]}")

    def check_up(self) -> None:
        """After `up -d`: three running containers, web healthy."""
        with docker.APIClient(base_url=self.side.host, version="1.41") as api:
            got = {}
            for c in api.containers(filters={
                    "label": f"com.docker.compose.project={self.project}"}):
                state = api.inspect_container(c["Id"])["State"]
                got[c["Labels"]["com.docker.compose.service"]] = (
                    state["Running"], (state.get("Health") or {}).get("Status"))
        want = {"web": (True, "healthy"), "writer": (True, None), "gate": (True, None)}
        if got != want:
            raise RuntimeError(f"[{self.side.name}] after up -d: {got}")

    def up(self) -> None:
        self.compose("up", "-d")


def compose_path(env: Env, plan: Plan) -> list[Row]:
    """`docker-compose up -d` to all-healthy for the three-service app, berth vs dockerd."""
    base = env.images["busybox"].ref
    with run_dockerd(env.workdir / "dockerd-compose", [env.registry.host]) as d:
        ref = Side("dockerd", d.host, lambda: [])
        berth = berth_side(env)
        sides = [s for s in (berth, ref) if s is not None]
        apps = {s.name: App(s, env.workdir / f"compose-{s.name}", base, net)
                for s, net in zip(sides, _free_subnets(len(sides)), strict=True)}
        for s in sides:
            s.docker("pull", base)
            apps[s.name].compose("build")

        def sample(side: Side | None) -> float | None:
            if side is None:
                return None
            app = apps[side.name]
            ms = timed(app.up)
            app.check_up()
            app.compose("down", "-v", "-t", "1")
            return ms

        try:
            b, p = interleave(lambda: sample(berth), lambda: sample(ref), plan.n, plan.warmup)
        finally:
            for app in apps.values():
                app.compose("down", "-v", "--rmi", "local", "-t", "1")
    floor = sorted(timed(lambda: subprocess.run([COMPOSE, "version"], capture_output=True,
                                                check=True)) for _ in range(max(3, plan.n // 3)))
    client = floor[len(floor) // 2]
    # gate waits for web's first probe, which Docker runs one interval after web starts
    interval = _probe_interval_ms()
    least = client + interval
    note = (f"both sides pay the client's own start: `docker-compose version` (no daemon) "
            f"p50 {client:.0f} ms in this run; with web's first health probe one interval "
            f"({interval:.0f} ms) after its start, no daemon's sample is under {least:.0f} "
            f"ms, {least / percentile(p, 50):.3f} of dockerd's p50")
    return [Row("docker-compose up -d to all-healthy, 3 services (web, writer, gate)", "ms",
                b, p, 0.5, note=note if berth else "berth side skipped: no Docker socket",
                peer_name="dockerd")]
