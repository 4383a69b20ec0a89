"""The bench world: one loopback registry, berthd and containerd side by side, torn down clean."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Peer
from bench.pods import pull
from cni_plugins import firewall
from cni_plugins.install import install
from tests.fixtures import hostclean
from tests.fixtures._proc import free_port
from tests.fixtures.berthd import Berthd, run_berthd
from tests.fixtures.containerd import Containerd, run_containerd
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage, push_images
from tests.fixtures.registry import Registry, run_registry
from tests.network.plugin_server import start_server, stop_server, wait_for

IMAGES = ("busybox", "pause", "big")
# crictl (cri-tools v1.26.1) as kubelet's users run it, when the machine has one; the CRI-path
# benches time it as a second client beside their in-process one.
CRICTL = next((c for c in (os.environ.get("BERTH_CRICTL"), "/root/go/bin/crictl",
                           shutil.which("crictl")) if c and Path(c).is_file()), None)


@dataclass
class Env:
    """Everything a metric may need: both peers, the registry, the pushed images, a scratch dir."""

    workdir: Path
    registry: Registry
    images: dict[str, PushedImage]
    berthd: Berthd
    containerd: Containerd
    berth: Peer
    ctrd: Peer

    def peers(self) -> tuple[Peer, Peer]:
        return self.berth, self.ctrd


def daemon_pids(peer: Peer) -> list[int]:
    """The peer's own processes (daemon and per-pod/node helpers), never the containers."""
    if peer.name == "berth":
        d: Berthd = peer.extra["berthd"]
        assert d.proc is not None
        return sorted({d.proc.pid, *hostclean.pids_with_arg(str(d.workdir)),
                       *hostclean.pids_with_arg(peer.extra["plugin_socket"])})
    c: Containerd = peer.extra["containerd"]
    assert c.proc is not None
    return sorted({c.proc.pid, *hostclean.pids_with_arg(str(c.socket))})


def _sum_field(pids: list[int], file: str, field: str) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/{file}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field):
                total += int(line.split()[1])
    return total


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over pids that are still there (what the targets are written against)."""
    return _sum_field(pids, "status", "VmRSS:")


def pss_kib(pids: list[int]) -> int:
    """Sum of PSS: pages shared by forked workers or one binary's shims counted once overall."""
    return _sum_field(pids, "smaps_rollup", "Pss:")


def _label(pid: int) -> str:
    """berthd, runtime.monitor, cni_plugins.server, containerd, containerd-shim-runc-v2, ..."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    prog = os.path.basename(argv[0])
    return os.path.basename(argv[1]) if prog.startswith("python") and len(argv) > 1 else prog


def rss_breakdown(pids: list[int]) -> str:
    """MiB per program, for the memory row's note."""
    by: dict[str, list[int]] = {}
    for pid in pids:
        by.setdefault(_label(pid), []).append(rss_kib([pid]))
    return ", ".join(f"{name} {sum(v) / 1024:.0f}" + (f" ({len(v)}×)" if len(v) > 1 else "")
                     for name, v in sorted(by.items()))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes used so far, threads and reaped children included.

    Children count because a runtime's helpers are often short-lived ones: containerd's shim
    runs `runc exec` for every ExecSync and `unpigz` may decompress its pulls, and berth's
    monitor forks the exec'd process itself. A helper counts once it has been waited for.
    """
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def plugin_server(workdir: Path) -> Iterator[str]:
    """A private warm CNI plugin server (what deploy autostarts); yields its socket path."""
    workdir.mkdir(parents=True, exist_ok=True)
    sock = str(workdir / "plugins.sock")
    proc = start_server(sock)
    try:
        yield sock
    finally:
        stop_server(proc, sock)
        if not wait_for(lambda: not hostclean.pids_with_arg(sock), 10):
            left = hostclean.pids_with_arg(sock)
            hostclean.kill_pids(left)
            raise AssertionError(f"plugin server processes left: {left}")


@contextmanager
def environment(workdir: Path) -> Iterator[Env]:
    """Start registry, berthd and containerd on private dirs; every teardown checks for leaks."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        stack.callback(firewall.prune)  # last: berth's nft table once no pod's rule is in it
        reg = stack.enter_context(run_registry(workdir / "registry"))
        images = push_images(reg.host, IMAGES)
        plugins = stack.enter_context(plugin_server(workdir / "cni-server"))
        metrics = {"address": f"127.0.0.1:{free_port()}"}
        b = stack.enter_context(run_berthd(workdir / "berthd", log_level="info",
                                           registry={"insecure": [reg.host]}, metrics=metrics))
        install(str(b.workdir / "cni-bin"), socket_path=plugins)  # as deployed: warm server
        ctrd_metrics = f"127.0.0.1:{free_port()}"
        c = stack.enter_context(run_containerd(workdir / "containerd", [reg.host],
                                               images["pause"].ref, ctrd_metrics))
        bcli = stack.enter_context(CriClient(b.endpoint, "berth"))
        ccli = stack.enter_context(CriClient(c.endpoint, "containerd"))
        berth = Peer("berth", bcli, {"berthd": b, "images": images, "plugin_socket": plugins,
                                     "metrics_url": f"http://{metrics['address']}/metrics"})
        ctrd = Peer("containerd", ccli, {"containerd": c, "images": images,
                                         "metrics_url": f"http://{ctrd_metrics}/v1/metrics"})
        for peer in (berth, ctrd):  # every metric starts warm; cold_pull empties on its own
            for name in ("busybox", "pause"):
                pull(peer, images[name].ref)
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        os.chmod(logs, 0o755)
        yield Env(workdir, reg, images, b, c, berth, ctrd)
