"""Build and push through the docker CLI, Berth against dockerd 20.10 in the same run.

The reference build is issue 15's: a first stage whose RUN writes a few MB, a second stage that
COPYs a 2,000-file tree (~40 MB of incompressible, seeded data) and takes the first stage's file,
then a RUN that indexes the tree: about 6 steps and a ~50 MB image. Rows:
- a cold build (`--no-cache`), a warm build (everything cached);
- a push of the built image to a fresh registry (started per round, so every blob is uploaded
  and neither side can mount or skip what the other pushed).
"""

from __future__ import annotations

import random
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.env import Env
from bench.harness import Plan, interleave
from bench.stats import Row
from tests.fixtures.dockerd import run_dockerd
from tests.fixtures.registry import run_registry

DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client
FILES = 2000
FILE_BYTES = 20 << 10


@dataclass(frozen=True)
class DockerSide:
    """One daemon behind the docker CLI."""

    name: str
    host: str  # unix:///...

    def cli(self, *args: str, timeout: float = 600) -> str:
        env = {"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0",
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "DOCKER_CONFIG": str(Path(tempfile.gettempdir()) / f"bench-cli-{self.name}")}
        res = subprocess.run([DOCKER_CLI, *args], env=env, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)} failed: {res.stderr}")
        return res.stdout


def reference_context(root: Path, base: str) -> Path:
    """The build context, the same bytes every run (seeded)."""
    rng = random.Random(15)
    tree = root / "tree"
    for i in range(FILES):
        d = tree / f"pkg{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i:04d}.bin").write_bytes(rng.randbytes(FILE_BYTES))
    (root / "Dockerfile").write_text(
        f"FROM {base} AS data\n"
        "RUN head -c 6000000 /dev/urandom > /blob\n"
        f"FROM {base}\n"
        "COPY tree/ /app/tree/\n"
        "COPY --from=data /blob /app/blob\n"
        "RUN ls -R /app > /app/index\n"
        'CMD ["ls", "/app"]\n')
    return root


def build_rows(sides: tuple[DockerSide, DockerSide], base_refs: tuple[str, str],
               plan: Plan, workdir: Path) -> list[Row]:
    """Cold and warm builds and a push, berth first in `sides`, the peer second."""
    ctx = reference_context(workdir / "build-context", base_refs[0])
    tag = f"bench-build-{uuid.uuid4().hex[:8]}:1"
    for side, base in zip(sides, base_refs, strict=True):
        side.cli("pull", base)
        side.cli("build", "-q", "-t", tag, str(ctx))  # warms the base and the cache

    def timed_build(side: DockerSide, *extra: str) -> Callable[[], float]:
        def once() -> float:
            t0 = _now()
            side.cli("build", "-q", *extra, "-t", tag, str(ctx))
            return (_now() - t0) * 1000
        return once

    n = max(3, plan.pulls)
    cold_b, cold_p = interleave(timed_build(sides[0], "--no-cache"),
                                timed_build(sides[1], "--no-cache"), n, 1)
    warm_b, warm_p = interleave(timed_build(sides[0]), timed_build(sides[1]), max(5, plan.n // 3),
                                1)
    push_b: list[float] = []
    push_p: list[float] = []
    for r in range(max(3, plan.pulls)):
        with run_registry(workdir / f"push-registry-{r}") as reg:
            order = [(sides[0], push_b), (sides[1], push_p)]
            for side, out in order if r % 2 == 0 else reversed(order):
                target = f"{reg.host}/{side.name}/pushed:{r}"
                side.cli("tag", tag, target)
                t0 = _now()
                side.cli("push", target)
                out.append((_now() - t0) * 1000)
                side.cli("rmi", target)
    for side in sides:
        side.cli("rmi", "-f", tag)
    note = f"{FILES} files of {FILE_BYTES >> 10} KiB + 6 MB from a RUN, 2 stages; docker CLI"
    return [
        Row("docker build --no-cache (reference Dockerfile)", "ms", cold_b, cold_p, 0.5,
            note=note, peer_name="dockerd"),
        Row("docker build, all steps cached", "ms", warm_b, warm_p, 0.5, peer_name="dockerd"),
        Row("docker push of the built image to a fresh registry", "ms", push_b, push_p, 0.5,
            note="~50 MB, every blob uploaded", peer_name="dockerd"),
    ]


def _now() -> float:
    return time.perf_counter()


def build_path(env: Env, plan: Plan) -> list[Row]:
    """The build and push rows, berthd's Docker socket against a private dockerd."""
    image = env.images["busybox"].ref
    sock = getattr(env.berthd, "docker_socket", None)
    with run_dockerd(env.workdir / "dockerd-build", [env.registry.host]) as d:
        sides = (DockerSide("berth", f"unix://{sock}"), DockerSide("dockerd", d.host))
        return build_rows(sides, (image, image), plan, env.workdir)
