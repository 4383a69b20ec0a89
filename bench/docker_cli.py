"""The docker CLI's own share of a Docker-path row, which both columns contain.

The same commands against a socket nobody listens on: each fails at its first connect, after
the client's start-up (Go runtime, config, user lookup). On a loaded machine that is most of
Berth's figure, so a row's note gives each daemon's p50 less it, and says when the target
(`ratio` x dockerd's p50) is below what the CLI alone costs, i.e. out of any daemon's reach.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.harness import timed
from bench.stats import percentile
from tests.fixtures.dockerd import DOCKER_CLI


def client_share(workdir: Path, argvs: list[list[str]], berth: list[float], peer: list[float],
                 n: int, ratio: float) -> str:
    """One sample runs every argv in turn (a row timing two CLI runs pays two starts)."""
    env = {"DOCKER_HOST": f"unix://{workdir / 'nobody.sock'}", "PATH": "/usr/bin:/bin"}

    def alone() -> None:
        for argv in argvs:
            subprocess.run([str(DOCKER_CLI), *argv], env=env, capture_output=True, timeout=60,
                           check=False)

    cli = percentile([timed(alone) for _ in range(n)], 50)
    what = " + ".join(f"`docker {' '.join(a[:2])}`" for a in argvs)
    server = f"berth {percentile(berth, 50) - cli:.0f}, " if berth else ""
    note = (f"the docker CLI alone ({what}, first connect refused) p50 {cli:.0f} ms; p50 less "
            f"it: {server}dockerd {percentile(peer, 50) - cli:.0f} ms")
    goal = ratio * percentile(peer, 50)
    if goal <= cli:
        note += f"; {ratio:g}x dockerd's p50 is {goal:.0f} ms, under the CLI alone"
    return note
