"""C launchers + warm plugin server: fallback, the server path, propagation, hygiene."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_plugins.install import install
from tests.network.conftest import new_cid
from tests.network.helpers import bridge_conf, cni, ip_json, ok
from tests.network.plugin_server import (
    kill_by_lock,
    server_pids,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
LO = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


@pytest.fixture
def serverless(tmp_path):
    """Launchers whose Python fallback cannot start: a call only succeeds through a server."""
    sock = str(tmp_path / "s.sock")
    bin_dir = str(tmp_path / "bin")
    install(bin_dir, interpreter="/nonexistent/python", socket_path=sock)
    return bin_dir, sock


def test_fallback_execs_python_without_server(fallback_bin, make_netns):
    assert ok(cni(fallback_bin, "loopback", "VERSION", {}))["supportedVersions"]
    ns = make_netns()
    ok(cni(fallback_bin, "loopback", "ADD", LO, "c", ns, "lo"))
    assert "UP" in ip_json("link", "show", "lo", netns=ns)[0]["flags"]
    bad = cni(fallback_bin, "loopback", "BOGUS", LO)
    assert bad.rc == 1 and bad.out["code"] == 4


def test_calls_go_through_server_and_fall_back_once_it_stops(serverless, make_netns):
    bin_dir, sock = serverless
    proc = start_server(sock)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert ok(cni(bin_dir, "portmap", "VERSION", {}))["supportedVersions"]
        ns = make_netns()
        ok(cni(bin_dir, "loopback", "ADD", LO, "c", ns, "lo"))
        assert "UP" in ip_json("link", "show", "lo", netns=ns)[0]["flags"]
    finally:
        stop_server(proc, sock)
    gone = cni(bin_dir, "loopback", "VERSION", {})
    assert gone.rc == 1 and gone.out["code"] == 999 and "/nonexistent/python" in gone.stderr
    assert wait_for(lambda: not server_pids(sock), 10)


def test_socket_path_from_env(serverless, tmp_path):
    bin_dir, _compiled_in = serverless
    sock = str(tmp_path / "other.sock")
    proc = start_server(sock)
    try:
        env = {"BERTH_CNI_SOCKET": sock}
        assert ok(cni(bin_dir, "bridge", "VERSION", {}, extra_env=env))["supportedVersions"]
    finally:
        stop_server(proc, sock)


def test_workers_live_for_one_call(serverless):
    bin_dir, sock = serverless
    proc = start_server(sock)

    def workers() -> list[int]:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [int(p) for p in f.read().split()]

    try:
        for _ in range(3):
            assert ok(cni(bin_dir, "loopback", "VERSION", {}))["supportedVersions"]
        assert wait_for(lambda: not workers())  # no process waits for calls but the server
        assert server_pids(sock) == [proc.pid]
    finally:
        stop_server(proc, sock)


def test_errors_exit_codes_env_stdin_cwd_umask_propagate(our_bin, tmp_path):
    bad = cni(our_bin, "bridge", "ADD", {"cniVersion": "1.0.0"}, "c", "/x")
    assert bad.rc == 1 and bad.out["code"] == 7  # env + stdin reached the worker
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "e",
           "CNI_PATH": our_bin, "CNI_ARGS": "broken"}
    conf = b'{"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local",' \
           b' "dataDir": "rel", "ranges": [[{"subnet": "10.88.250.0/30"}]]}}'
    proc = subprocess.run([f"{our_bin}/host-local"], input=conf, env=env, capture_output=True)
    assert proc.returncode == 1 and b'"code": 4' in proc.stdout
    env["CNI_ARGS"] = ""
    proc = subprocess.run(["sh", "-c", f"umask 077; exec {our_bin}/host-local"], input=conf,
                          env=env, cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leases = list((tmp_path / "rel" / "n").glob("10.88.250.*"))  # dataDir relative to cwd
    assert len(leases) == 1 and stat.S_IMODE(leases[0].stat().st_mode) & 0o077 == 0


def test_concurrent_bridge_adds_through_server(our_bin, make_netns, net):
    conf = bridge_conf(net["name"], net["bridge"], net["subnet"], net["data_dir"])
    pods = [(new_cid(net), make_netns()) for _ in range(8)]

    def add(pod: tuple[str, str]) -> str:
        return ok(cni(our_bin, "bridge", "ADD", conf, *pod))["ips"][0]["address"]

    with ThreadPoolExecutor(8) as pool:
        ips = list(pool.map(add, pods))
    assert len(set(ips)) == 8
    for cid, ns in pods:
        assert ip_json("addr", "show", "eth0", netns=ns)[0]["addr_info"]
        ok(cni(our_bin, "bridge", "DEL", conf, cid, ns))


def test_plugin_works_in_the_netns_it_was_called_in(our_bin, make_netns, net):
    """A worker joins the caller's netns: a bridge ADD run inside a "node" netns makes the
    bridge and the pod's host veth there, and nothing in the server's (host) netns."""
    node, pod, cid = make_netns(), make_netns(), new_cid(net)
    conf = bridge_conf(net["name"], net["bridge"], net["subnet"], net["data_dir"], ipMasq=False)
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
           "CNI_NETNS": pod, "CNI_IFNAME": "eth0", "CNI_PATH": our_bin}
    run = subprocess.run(["nsenter", f"--net={node}", f"{our_bin}/bridge"], env=env,
                         input=json.dumps(conf).encode(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    veth = json.loads(run.stdout)["interfaces"][1]["name"]
    assert {x["ifname"] for x in ip_json("link", netns=node)} >= {net["bridge"], veth}
    assert not [x for x in ip_json("link") if x["ifname"] in (net["bridge"], veth)]
    env["CNI_COMMAND"] = "DEL"
    run = subprocess.run(["nsenter", f"--net={node}", f"{our_bin}/bridge"], env=env,
                         input=json.dumps(conf).encode(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("payload", [b"nonsense", b"x" * 70000, b"berth-cni/1\0evil\x0022\0\0"])
def test_bad_requests_are_refused_and_server_keeps_serving(our_bin, plugin_socket, payload):
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(plugin_socket)
        fds = [os.open("/dev/null", os.O_RDWR) for _ in range(4)]
        try:
            s.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(
                b"".join(fd.to_bytes(4, "little") for fd in fds)))])
        finally:
            for fd in fds:
                os.close(fd)
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # closed unread: refused all the same
            assert s.recv(16) == b""
    assert ok(cni(our_bin, "loopback", "VERSION", {}))["supportedVersions"]


def test_autostart_server_exits_when_idle(tmp_path):
    sock = str(tmp_path / "auto.sock")
    bin_dir = str(tmp_path / "bin")
    install(bin_dir, socket_path=sock, autostart=True, idle=1.0)
    try:
        assert ok(cni(bin_dir, "loopback", "VERSION", {}))  # runs by exec, starts the server
        assert wait_for(lambda: os.path.exists(sock))
        assert ok(cni(bin_dir, "loopback", "VERSION", {}))
        assert wait_for(lambda: not server_pids(sock), 20), "idle server did not exit"
        assert not os.path.exists(sock)
    finally:
        kill_by_lock(sock)
