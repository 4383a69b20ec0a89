"""The dockerd peer is private: its own dirs, containerd, bridge, and no firewall changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.fixtures import hostclean
from tests.fixtures.dockerd import DOCKER_CLI, Dockerd


def test_dockerd_runs_on_private_state_only(dockerd: Dockerd) -> None:
    info = json.loads(subprocess.run(
        [str(DOCKER_CLI), "info", "--format", "{{json .}}"], env=dockerd.cli_env(),
        capture_output=True, text=True, check=True, timeout=60).stdout)  # fmt: skip
    assert info["DockerRootDir"] == str(dockerd.data_root)
    assert info["ServerVersion"].startswith("20.10.")
    assert info["CgroupDriver"] == "cgroupfs"
    # its containerd is ours, on the workdir's socket, not /run/containerd
    assert dockerd.dockerd is not None
    argv = Path(f"/proc/{dockerd.dockerd.pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--containerd") + 1] == str(dockerd.containerd_socket)
    # its bridge on 10.89.N.0/24, and no DOCKER chain anywhere (--iptables=false)
    addr = subprocess.run(["ip", "-4", "-o", "addr", "show", dockerd.bridge],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert dockerd.subnet.replace(".0/24", ".1/24") in addr and "10.89." in dockerd.subnet
    for table in ("nat", "filter"):
        assert not any(c.startswith("DOCKER") for c in hostclean.chains(table))
