"""Docker-path rows: Debian's docker CLI against berthd's Docker socket and a private dockerd.

Both daemons are driven by the same client (/usr/bin/docker, 20.10) in one run, alternating
sample by sample. dockerd is started here (tests/fixtures/dockerd.py), not in bench/env.py, so
the CRI metrics pay nothing for it. Until berthd serves the Docker API (the Berthd handle has no
`docker_socket`), the berth side is skipped and the rows carry dockerd's figures alone.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.docker_cli import client_share
from bench.docker_net_bench import network_rows
from bench.env import Env, daemon_pids, pss_kib
from bench.harness import Plan, interleave, timed
from bench.stats import Row
from tests.fixtures import hostclean
from tests.fixtures.dockerd import DOCKER_CLI, Dockerd, run_dockerd

NOT_MERGED = "berth side skipped: Berth's Docker API is not merged yet (no Berthd.docker_socket)"


@dataclass
class Side:
    """One daemon as the docker CLI sees it, and the processes whose memory it costs."""

    name: str
    host: str
    pids: Callable[[], list[int]]

    def docker(self, *args: str, timeout: float = 120) -> str:
        res = subprocess.run([str(DOCKER_CLI), *args], capture_output=True, text=True,
                             env={"DOCKER_HOST": self.host, "PATH": "/usr/bin:/bin"},
                             timeout=timeout, check=False)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"[{self.name}] docker {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout


def _dockerd_pids(d: Dockerd) -> list[int]:
    """dockerd, its containerd, the shims and docker-proxy: all name the private workdir."""
    assert d.dockerd is not None
    return sorted({d.dockerd.pid, *hostclean.pids_with_arg(str(d.workdir))})


def berth_side(env: Env) -> Side | None:
    sock = getattr(env.berthd, "docker_socket", None)
    if sock is None or not Path(sock).exists():
        return None
    return Side("berth", f"unix://{sock}", lambda: daemon_pids(env.berth))


def _sampler(side: Side | None, fn: Callable[[Side], object]) -> Callable[[], float | None]:
    return (lambda: None) if side is None else (lambda: timed(lambda: fn(side)))


def docker_path(env: Env, plan: Plan) -> list[Row]:
    """run --rm, user networks (bench/docker_net_bench.py), exec, ps with `small` containers
    up, and PSS per running container."""
    image = env.images["busybox"].ref
    with run_dockerd(env.workdir / "dockerd", [env.registry.host]) as d:
        ref = Side("dockerd", d.host, lambda: _dockerd_pids(d))
        berth = berth_side(env)
        sides = [s for s in (berth, ref) if s is not None]
        for s in sides:
            s.docker("pull", image)
        note = "" if berth else NOT_MERGED
        rows = []
        b, p = interleave(_sampler(berth, lambda s: s.docker("run", "--rm", image, "true")),
                          _sampler(ref, lambda s: s.docker("run", "--rm", image, "true")),
                          plan.n, plan.warmup)  # fmt: skip
        rows.append(Row(f"docker run --rm {image.split('/', 1)[1]} true", "ms", b, p, 0.5,
                        note=note, peer_name="dockerd"))  # fmt: skip
        rows += network_rows(berth, ref, image, plan, note, env.workdir)
        for s in sides:
            s.docker("run", "-d", "--name", "bench-exec", image, "sleep", "3600")
        b, p = interleave(_sampler(berth, lambda s: s.docker("exec", "bench-exec", "true")),
                          _sampler(ref, lambda s: s.docker("exec", "bench-exec", "true")),
                          plan.n, plan.warmup)  # fmt: skip
        share = client_share(env.workdir, [["exec", "bench-exec", "true"]], b, p, plan.n, 0.5)
        exec_note = "; ".join(x for x in (share, note) if x)
        rows.append(Row("docker exec CTR true", "ms", b, p, 0.5, note=exec_note,
                        peer_name="dockerd"))  # fmt: skip
        for s in sides:
            s.docker("rm", "-f", "bench-exec")
        idle = {s.name: pss_kib(s.pids()) for s in sides}
        for s in sides:
            for i in range(plan.small):
                s.docker("run", "-d", "--name", f"bench-pop-{i}", image, "sleep", "3600")
        b, p = interleave(_sampler(berth, lambda s: s.docker("ps")),
                          _sampler(ref, lambda s: s.docker("ps")), plan.n, plan.warmup)
        rows.append(Row(f"docker ps, {plan.small} containers", "ms", b, p, 1.0, note=note,
                        peer_name="dockerd"))  # fmt: skip
        rows.append(_pss_row(sides, idle, plan.small, plan.n, note))
        for s in sides:
            names = [f"bench-pop-{i}" for i in range(plan.small)]
            s.docker("rm", "-f", *names, timeout=300)
    return rows


def _pss_row(sides: list[Side], idle: dict[str, int], count: int, n: int, note: str) -> Row:
    """PSS the daemon side (daemon + runtime helpers + shims or monitor) adds per running
    container over its idle self, read n times; the note gives the total per container too."""
    got: dict[str, list[float]] = {s.name: [] for s in sides}
    for _ in range(n):
        for s in sides:
            got[s.name].append((pss_kib(s.pids()) - idle[s.name]) / 1024 / count)
        time.sleep(0.05)
    total = ", ".join(f"{s.name} {pss_kib(s.pids()) / 1024 / count:.2f} MiB" for s in sides)
    text = f"total daemon-side PSS / containers: {total}"
    return Row(f"PSS per running container, {count} up", "MiB", got.get("berth", []),
               got["dockerd"], 0.5, note="; ".join(x for x in (text, note) if x),
               peer_name="dockerd")  # fmt: skip
