"""Docker user-network rows, run inside docker_path's dockerd session with the same CLI.

`docker network create` + `rm` (a record made and gone on Berth, whose bridge, conflist,
isolation rules and DNS listener wait for a first member; a libnetwork bridge network on
dockerd; the note gives the two CLI starts both pay, and a zero-work stub daemon's figure in the
same rounds: bench/docker_stub.py), and `docker run --network USERNET --rm`
(a container joining a user network, with its embedded-DNS resolv.conf). Subnets come from each
daemon's private pool (tests/fixtures: berthd 10.91/16, dockerd 10.92/16).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.docker_cli import client_share
from bench.docker_stub import stub_daemon
from bench.harness import Plan, interleave, timed
from bench.stats import Row, percentile

if TYPE_CHECKING:
    from bench.docker_bench import Side

NET = "bench-usernet"


def network_rows(berth: Side | None, ref: Side, image: str, plan: Plan, note: str,
                 workdir: Path) -> list[Row]:
    sides = [s for s in (berth, ref) if s is not None]
    counter = itertools.count()

    def create_rm(s: Side) -> None:
        name = f"bench-net-{next(counter)}"
        s.docker("network", "create", name)
        s.docker("network", "rm", name)

    def sampler(fn: Callable[[Side], object], side: Side | None) -> Callable[[], float | None]:
        return (lambda: None) if side is None else (lambda: timed(lambda: fn(side)))

    rows = []
    with stub_daemon(workdir) as host:
        stub = dataclasses.replace(ref, name="stub", host=host, pids=lambda: [])
        b, p, z = _three(sampler(create_rm, berth), sampler(create_rm, ref),
                         sampler(create_rm, stub), plan)
    share = client_share(workdir, [["network", "create", "bench-net-x"],
                                   ["network", "rm", "bench-net-x"]], b, p, plan.n, 0.5)
    floor = (f"a daemon that does no work (canned replies) p50 {percentile(z, 50):.1f} ms, "
             f"{percentile(z, 50) / percentile(p, 50):.3f} of dockerd's")
    rows.append(Row("docker network create + rm", "ms", b, p, 0.5,
                    note="; ".join(x for x in (share, floor, note) if x), peer_name="dockerd"))
    for s in sides:
        s.docker("network", "create", NET)
    try:
        def run(s: Side) -> None:
            s.docker("run", "--network", NET, "--rm", image, "true")

        b, p = interleave(sampler(run, berth), sampler(run, ref), plan.n, plan.warmup)
        rows.append(Row(f"docker run --network USERNET --rm {image.split('/', 1)[1]} true",
                        "ms", b, p, 0.5, note=note, peer_name="dockerd"))
    finally:
        for s in sides:
            s.docker("network", "rm", NET)
    return rows


def _three(berth: Callable[[], float | None], peer: Callable[[], float | None],
           stub: Callable[[], float | None], plan: Plan) -> tuple[list[float], list[float],
                                                                  list[float]]:
    """interleave() with the stub's sample taken in each round too, first or last by turns."""
    z: list[float] = []
    turn = itertools.count()

    def berth_and_stub() -> float | None:
        first = next(turn) % 2 == 0
        if first:
            z.append(stub() or 0.0)
        value = berth()
        if not first:
            z.append(stub() or 0.0)
        return value

    b, p = interleave(berth_and_stub, peer, plan.n, plan.warmup)
    return b, p, z[plan.warmup:]
