"""/healthz follows CRI Status; a relaunched monitor is counted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.fixtures import hostclean
from tests.fixtures._proc import free_port, wait_until
from tests.fixtures.berthd import run_berthd
from tests.fixtures.registry import Registry
from tests.metrics.prom import one, scrape

pytestmark = pytest.mark.timeout(120)


def _monitor_pids(workdir: Path) -> list[int]:
    def is_monitor(pid: int) -> bool:
        try:
            return b"runtime.monitor" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
    return [p for p in hostclean.pids_with_arg(str(workdir)) if is_monitor(p)]


def test_healthz_is_503_while_the_network_is_not_ready(tmp_path: Path,
                                                       registry: Registry) -> None:
    port = free_port()
    empty = tmp_path / "no-cni"
    empty.mkdir()
    with run_berthd(tmp_path / "b", registry={"insecure": [registry.host]},
                    metrics={"address": f"127.0.0.1:{port}"},
                    cni={"conf_dir": str(empty)}) as d:
        resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert resp.status_code == 503
        body = resp.json()
        assert body["ready"] is False
        net = next(c for c in body["conditions"] if c["type"] == "NetworkReady")
        assert net["status"] is False and net["reason"]
        with d.client() as cli:
            conds = {c.type: c.status for c in cli.runtime.Status(
                cli.pb.StatusRequest(), timeout=10).status.conditions}
        assert conds == {"RuntimeReady": True, "NetworkReady": False}


def test_monitor_relaunch_is_counted(tmp_path: Path, registry: Registry) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with run_berthd(tmp_path / "b", registry={"insecure": [registry.host]},
                    metrics={"address": f"127.0.0.1:{port}"}) as d:
        assert one(scrape(url), "berth_monitor_restarts_total") == 0
        (victim,) = _monitor_pids(d.workdir)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{victim}").exists(), 10, "monitor to die")
        # a scrape asks the monitor for its containers: the first one may find it gone
        wait_until(lambda: one(scrape(url), "berth_monitor_restarts_total") == 1, 30,
                   "the monitor relaunch to be counted")
        assert len(_monitor_pids(d.workdir)) == 1

