"""berthd as a process: start-up refusals, logs, shutdown, and the first RPCs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import api_pb2, api_pb2_grpc

BERTHD = [sys.executable, "-m", "berthd.daemon"]
ROOT = Path(__file__).parents[2]


def config(tmp_path: Path, install_conflist: bool = False, **extra: str) -> Path:
    lines = {"state_dir": f'"{tmp_path}/state"', "run_dir": f'"{tmp_path}/run"',
             "log_level": '"info"'}
    lines.update(extra)
    body = "".join(f"{k} = {v}\n" for k, v in lines.items())
    body += (f'[cni]\nconf_dir = "{tmp_path}/net.d"\n'
             f'install_default_conflist = {str(install_conflist).lower()}\n'
             '[metrics]\naddress = ""\n')
    path = tmp_path / "berth.toml"
    path.write_text(body)
    return path


def run_fail(args: list[str], prefix: tuple[str, ...] = ()) -> str:
    """berthd must exit non-zero with exactly one line and no traceback."""
    res = subprocess.run([*prefix, *BERTHD, *args], capture_output=True, text=True, timeout=30,
                         cwd=ROOT)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


class Daemon:
    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.socket = cfg.parent / "run" / "berth.sock"
        self.proc = subprocess.Popen(BERTHD + ["--config", str(cfg)], cwd=ROOT,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"berthd did not start: {self.proc.stderr and self.proc.stderr.read()}")
            time.sleep(0.02)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)
        self.runtime.Version(api_pb2.VersionRequest(), timeout=20, wait_for_ready=True)

    def stop(self) -> tuple[int, str]:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        stop_monitor(self.cfg.parent / "state")
        return self.proc.returncode, err


def stop_monitor(state_dir: Path) -> None:
    """The monitor outlives berthd by design; a test that started one stops it."""
    lock = state_dir / "monitor.lock"
    if not lock.exists() or not lock.read_text().strip():
        return
    pid = int(lock.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.02)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(config(tmp_path))
    yield d
    if d.proc.poll() is None:
        d.stop()


def test_serves_version_status_and_runtime_config(daemon: Daemon):
    v = daemon.runtime.Version(api_pb2.VersionRequest(), timeout=10)
    assert (v.runtime_name, v.runtime_api_version) == ("berth", "v1")
    st = daemon.runtime.Status(api_pb2.StatusRequest(verbose=True), timeout=10)
    conds = {c.type: c for c in st.status.conditions}
    assert conds["RuntimeReady"].status is True
    assert conds["NetworkReady"].status is False and conds["NetworkReady"].reason
    assert str(daemon.cfg.parent / "net.d") in conds["NetworkReady"].message
    assert json.loads(st.info["config"])["state_dir"].endswith("/state")
    rc = daemon.runtime.RuntimeConfig(api_pb2.RuntimeConfigRequest(), timeout=10)
    assert rc.linux.cgroup_driver == api_pb2.CgroupDriver.CGROUPFS
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o660


def test_unimplemented_rpcs_name_themselves(daemon: Daemon):
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime.CheckpointContainer(api_pb2.CheckpointContainerRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in (info.value.details() or "")


def test_sigterm_is_clean_and_logs_are_structured(daemon: Daemon):
    daemon.runtime.Version(api_pb2.VersionRequest(), timeout=10)  # polled: logged at debug only
    daemon.runtime.RemoveContainer(api_pb2.RemoveContainerRequest(container_id="gone"), timeout=10)
    code, err = daemon.stop()
    assert code == 0
    assert not daemon.socket.exists()
    records = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    rpcs = [r for r in records if r.get("event") == "rpc"]
    assert [r["method"] for r in rpcs] == ["RemoveContainer"]
    rpc = rpcs[0]
    assert rpc["code"] == "OK"
    assert rpc["request_id"] and rpc["duration_ms"] >= 0
    assert any(r.get("event") == "stopped" for r in records)


def test_second_daemon_on_same_state_dir_refused(daemon: Daemon, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    cfg = config(other, state_dir=f'"{tmp_path}/state"')
    assert "another berthd" in run_fail(["--config", str(cfg)])


def test_socket_in_use_refused(daemon: Daemon, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    cfg = config(other, socket=f'"{daemon.socket}"')
    assert "already in use" in run_fail(["--config", str(cfg)])


def test_default_conflist_makes_network_ready(tmp_path: Path):
    d = Daemon(config(tmp_path, install_conflist=True))
    try:
        st = d.runtime.Status(api_pb2.StatusRequest(), timeout=10)
        conds = {c.type: c for c in st.status.conditions}
        assert conds["NetworkReady"].status is True, conds["NetworkReady"]
        assert list((tmp_path / "net.d").glob("*.conflist"))
    finally:
        assert d.stop()[0] == 0


def test_stale_socket_is_replaced(tmp_path: Path):
    d = Daemon(config(tmp_path))
    d.proc.kill()
    d.proc.wait()
    d.channel.close()
    assert d.socket.exists()
    d2 = Daemon(config(tmp_path))
    assert d2.runtime.Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "berth"
    assert d2.stop()[0] == 0


@pytest.mark.parametrize("text, expect", [
    ("garbage = [", "not valid TOML"),
    ("nope = 1", "unknown config key 'nope'"),
])
def test_bad_config_is_one_line(tmp_path: Path, text: str, expect: str):
    (tmp_path / "bad.toml").write_text(text)
    assert expect in run_fail(["--config", str(tmp_path / "bad.toml")])


def test_missing_config_file(tmp_path: Path):
    assert "does not exist" in run_fail(["--config", str(tmp_path / "absent.toml")])


def test_unwritable_state_dir(tmp_path: Path):
    (tmp_path / "file").write_text("")
    cfg = config(tmp_path, state_dir=f'"{tmp_path}/file/state"')
    assert "cannot create" in run_fail(["--config", str(cfg)])


def test_world_writable_socket_dir_refused(tmp_path: Path):
    wide = tmp_path / "wide"
    wide.mkdir()
    wide.chmod(0o777)
    cfg = config(tmp_path, socket=f'"{wide}/berth.sock"')
    assert "world-writable" in run_fail(["--config", str(cfg)])


def test_not_root_refused(tmp_path: Path):
    # An unmapped user namespace makes berthd's euid the overflow uid while files stay readable.
    line = run_fail(["--config", str(config(tmp_path))], prefix=("unshare", "--user"))
    assert "must run as root" in line
