"""Pod churn soak: many clients cycling pods with hostPorts; prints leak counts and berthd RSS.

Run: .venv/bin/python -m tests.soak.churn --cycles 1000 --clients 4
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.fixtures._proc import free_port
from tests.fixtures.berthd import Berthd, run_berthd
from tests.fixtures.cri_client import CriClient, remove_all_pods, sandbox_config
from tests.fixtures.images import push_images
from tests.fixtures.registry import run_registry
from tests.soak.leaks import Snapshot, remove_cgroup_parent, rss_kb, snapshot

RSS_MARK = 100  # the cycle whose RSS is the baseline for growth on long runs
SLEEP = ["sleep", "3600"]


class PortPool:
    """Free loopback ports, never handed out twice in one soak."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while (port := free_port()) in self._used:
                pass
            self._used.add(port)
            return port


@dataclass
class ChurnResult:
    """Figures of one soak: timings, errors, leak counts and berthd RSS at the marks."""

    cycles: int
    clients: int
    seconds: float = 0.0
    cycle_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # teardown failures a retry fixed
    rss_kb: dict[str, int] = field(default_factory=dict)  # start / cycle 100 / end
    before: Snapshot | None = None
    after: Snapshot | None = None

    @property
    def leaks(self) -> dict[str, int]:
        assert self.before is not None and self.after is not None
        return self.after.minus(self.before)

    @property
    def rss_growth(self) -> float | None:
        """Relative RSS growth from cycle 100 to the end (None on runs of <= 100 cycles)."""
        mark = self.rss_kb.get(f"cycle {RSS_MARK}")
        if mark is None or self.cycles <= RSS_MARK:
            return None
        return self.rss_kb["end"] / mark - 1

    def report(self) -> str:
        q = statistics.quantiles(self.cycle_s, n=100) if len(self.cycle_s) > 1 else [0.0] * 99
        growth = self.rss_growth
        lines = [
            f"churn: {len(self.cycle_s)}/{self.cycles} cycles, {self.clients} clients, "
            f"{self.seconds:.1f}s ({len(self.cycle_s) / max(self.seconds, 1e-9):.2f} cycles/s)",
            f"cycle latency: p50 {q[49]:.2f}s p99 {q[98]:.2f}s "
            f"max {max(self.cycle_s, default=0):.2f}s",
            f"errors: {len(self.errors)}" + "".join(f"\n  {e}" for e in self.errors[:10]),
            f"teardowns retried (as kubelet would): {len(self.retried)}"
            + "".join(f"\n  {e}" for e in self.retried[:10]),
            "berthd RSS KiB: " + ", ".join(f"{k} {v}" for k, v in self.rss_kb.items())
            + (f" (growth cycle {RSS_MARK}->end {growth:+.1%})" if growth is not None else ""),
        ]
        if self.before is not None and self.after is not None:
            for label, counts in (("before", self.before.as_dict()),
                                  ("after ", self.after.as_dict()), ("leaked", self.leaks)):
                lines.append(f"{label}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
        return "\n".join(lines)


@dataclass
class Soak:
    """What every client thread shares."""

    d: Berthd
    image: str
    log_dir: Path
    cgroup_parent: str
    ports: PortPool = field(default_factory=PortPool)
    retried: list[str] = field(default_factory=list)


def teardown(cli: CriClient, pod: str, retried: list[str], attempts: int = 3) -> None:
    """StopPodSandbox + RemovePodSandbox, retried after a failure the way kubelet retries."""
    pb, rt = cli.pb, cli.runtime
    for attempt in range(1, attempts + 1):
        try:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            return
        except grpc.RpcError as e:
            if attempt == attempts:
                raise
            retried.append(f"pod {pod[:12]}: {e.code().name} {e.details()}")
            time.sleep(1)


def cycle(s: Soak, cli: CriClient, n: int) -> None:
    """One pod life: run with a hostPort, two containers, ExecSync, stop, remove."""
    pb = cli.pb
    rt = cli.runtime
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=s.ports.take(),
                             host_ip="127.0.0.1")
    cfg = sandbox_config(cli, f"churn-{n}", str(s.log_dir), port_mappings=[mapping],
                         linux=pb.LinuxPodSandboxConfig(cgroup_parent=s.cgroup_parent))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    try:
        cids = []
        for name in ("a", "b"):
            ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                      image=pb.ImageSpec(image=s.image), command=SLEEP,
                                      log_path=f"{n}-{name}.log")
            cid = rt.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
            rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
            cids.append(cid)
        out = rt.ExecSync(pb.ExecSyncRequest(container_id=cids[0], cmd=["echo", f"cycle{n}"],
                                             timeout=30), timeout=60)
        if out.exit_code != 0 or out.stdout != f"cycle{n}\n".encode():
            raise AssertionError(f"ExecSync gave {out.exit_code} {out.stdout!r} {out.stderr!r}")
    finally:
        teardown(cli, pod, s.retried)


def run_churn(d: Berthd, image: str, cycles: int, clients: int, log_dir: Path,
              progress: bool = False) -> ChurnResult:
    """N cycles shared by K client threads (each with its own channel) after one warm-up cycle."""
    s = Soak(d, image, log_dir, f"berthsoak{random.getrandbits(24):06x}")
    res = ChurnResult(cycles, clients, retried=s.retried)
    assert d.proc is not None
    pid = d.proc.pid
    lock = threading.Lock()
    counter = iter(range(1, cycles + 1))
    try:
        with CriClient(d.endpoint) as cli:
            cli.image.PullImage(cli.pb.PullImageRequest(image=cli.pb.ImageSpec(image=image)),
                                timeout=120)
            cycle(s, cli, 0)  # warm-up: lazily created pools and sockets are not leaks
        res.before = snapshot(d, s.cgroup_parent)
        res.rss_kb["start"] = rss_kb(pid)

        def client() -> None:
            with CriClient(d.endpoint) as cli:
                while True:
                    with lock:
                        n = next(counter, None)
                    if n is None:
                        return
                    t0 = time.monotonic()
                    try:
                        cycle(s, cli, n)
                    except (grpc.RpcError, AssertionError) as e:
                        msg = e.details() if isinstance(e, grpc.RpcError) else str(e)
                        with lock:
                            res.errors.append(f"cycle {n}: {msg}")
                        continue
                    with lock:
                        res.cycle_s.append(time.monotonic() - t0)
                        done = len(res.cycle_s)
                        if done == RSS_MARK:
                            res.rss_kb[f"cycle {RSS_MARK}"] = rss_kb(pid)
                    if progress and done % 50 == 0:
                        print(f"  {done} cycles, RSS {rss_kb(pid)} KiB", file=sys.stderr)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, name=f"churn-{i}") for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res.seconds = time.monotonic() - t0
        res.rss_kb["end"] = rss_kb(pid)
        res.after = snapshot(d, s.cgroup_parent)
    finally:  # pods a failed step left behind hold cgroups below the parent
        with contextlib.suppress(grpc.RpcError), CriClient(d.endpoint) as cli:
            remove_all_pods(cli)
        remove_cgroup_parent(s.cgroup_parent)
    return res


@contextmanager
def environment(workdir: Path) -> Iterator[tuple[Berthd, str]]:
    """Registry with busybox plus a berthd on private dirs, outside pytest."""
    with ExitStack() as stack:
        reg = stack.enter_context(run_registry(workdir / "registry"))
        image = push_images(reg.host, ["busybox"])["busybox"].ref
        d = stack.enter_context(run_berthd(workdir / "berthd", log_level="warning",
                                           registry={"insecure": [reg.host]}))
        yield d, image


def main(argv: list[str] | None = None) -> int:
    """Print the figures; exit 1 on errors, leaks, or RSS growth >= 5% past cycle 100."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="berth-churn-") as tmp:
        logs = Path(tmp, "logs")
        logs.mkdir()
        with environment(Path(tmp)) as (d, image):
            res = run_churn(d, image, args.cycles, args.clients, logs, progress=True)
    print(res.report())
    growth = res.rss_growth
    bad = res.errors or any(res.leaks.values()) or (growth is not None and growth >= 0.05)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
