"""With default addresses nothing in Berth listens beyond loopback; the CRI socket is private."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine.config import MetricsConfig, StreamingConfig
from tests.fixtures._proc import free_port
from tests.fixtures.berthd import Berthd, run_berthd
from tests.fixtures.cri_client import run_container, sandbox_config
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry
from tests.soak.leaks import descendants, monitor_pid

pytestmark = pytest.mark.timeout(120)
TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Bound:
    """One inet socket a Berth process holds: table, local address, port, state."""

    pid: int
    table: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    state: str


def _addr(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])  # /proc prints host (little-endian) order
    return ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def inet_sockets(pid: int) -> Iterator[Bound]:
    """The process's inet sockets, matched by inode in its own netns's /proc/net tables."""
    try:
        mine = socket_inodes(pid)
    except OSError:  # exited meanwhile
        return
    for table in TABLES:
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return
        for line in lines:
            cols = line.split()
            if cols[9] in mine:
                host, port = cols[1].split(":")
                yield Bound(pid, table, _addr(host), int(port, 16), cols[3])


def exposed(b: Bound) -> bool:
    """Listening (TCP) or bound (UDP/raw) anywhere but loopback."""
    if b.table.startswith("tcp") and b.state != TCP_LISTEN:
        return False
    a = b.address
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return not a.is_loopback


@pytest.fixture
def default_berthd(tmp_path: Path, registry: Registry) -> Iterator[Berthd]:
    """berthd with the built-in metrics and streaming hosts (a free port for the fixed one)."""
    metrics_host = MetricsConfig().address.rpartition(":")[0]
    with run_berthd(tmp_path / "b", registry={"insecure": [registry.host]},
                    metrics={"address": f"{metrics_host}:{free_port()}"},
                    streaming={"address": StreamingConfig().address}) as d:
        yield d


def test_defaults_listen_on_loopback_only(default_berthd: Berthd,
                                          e2e_images: dict[str, PushedImage], tmp_path: Path):
    d = default_berthd
    cli = d.client()
    pb = cli.pb
    cfg = sandbox_config(cli, "listen", str(tmp_path))
    pod = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    cid = run_container(cli, pod, cfg, e2e_images["busybox"].ref, ["sleep", "60"], "c")
    url = cli.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["true"], stdout=True),
                           timeout=10).url  # the streaming server is up and handing out URLs
    assert ipaddress.ip_address(urlparse(url).hostname or "").is_loopback, url
    assert d.proc is not None
    berth = [d.proc.pid, monitor_pid(d)]
    helpers = [p for p in descendants(berth) if b"python" in _cmdline(p)]  # not containers
    found = [b for pid in set(berth + helpers) for b in inet_sockets(pid)]
    print("inet sockets of berthd and the monitor:",
          [f"{b.table} {b.address}:{b.port} st={b.state}" for b in found])
    listening = [b for b in found if not b.table.startswith("tcp") or b.state == TCP_LISTEN]
    assert len(listening) >= 2, "metrics and streaming listeners were not found"
    assert [b for b in found if exposed(b)] == []
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def test_cri_socket_is_not_open_to_others(berthd_fn: Berthd):
    """World-writable socket dirs are refused at start (tests/daemon); the socket is root's."""
    st = os.stat(berthd_fn.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert st.st_uid == 0
    assert not st.st_mode & stat.S_IWOTH, oct(st.st_mode)
    parent = os.stat(berthd_fn.socket.parent).st_mode
    assert not parent & stat.S_IWOTH, oct(parent)


def test_detector_reads_proc_net_right():
    """The scan finds a known listener with its real address; a wildcard bind would count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        mine = [b for b in inet_sockets(os.getpid()) if b.port == port]
    assert [(str(b.address), b.state) for b in mine] == [("127.0.0.1", TCP_LISTEN)]
    wildcard = Bound(0, "tcp6", ipaddress.IPv6Address("::"), 80, TCP_LISTEN)
    assert exposed(wildcard)
    assert not exposed(Bound(0, "tcp6", ipaddress.IPv6Address("::ffff:127.0.0.1"), 80,
                             TCP_LISTEN))
