"""The Debian docker CLI (20.10) as a client of berthd: run attached, -i stdin, ps, logs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

DOCKER = "/usr/bin/docker"  # Debian's docker.io CLI, as issue 14 asks; never its daemon here

pytestmark = pytest.mark.skipif(not shutil.which(DOCKER), reason="docker.io CLI not installed")


def cli(berthd, *args: str, stdin: bytes | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DOCKER_HOST": f"unix://{berthd.docker_socket}",
           "DOCKER_CONFIG": str(berthd.workdir / "docker-cli")}
    return subprocess.run([DOCKER, *args], input=stdin, capture_output=True, env=env,
                          timeout=timeout)


def test_run_rm_attached_output_and_exit_code(berthd, busybox, dclient):
    res = cli(berthd, "run", "--rm", busybox, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout == b"out\n" and res.stderr == b"err\n"
    assert not dclient.containers.list(all=True, filters={"ancestor": busybox,
                                                          "status": "exited"})


def test_run_interactive_stdin(berthd, busybox):
    res = cli(berthd, "run", "--rm", "-i", busybox, "sh", "-c", "tr a-z A-Z",
              stdin=b"hello stdin\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"HELLO STDIN\n"


def test_ps_inspect_logs_exec_rm(berthd, busybox):
    name = "cli-bg"
    try:
        res = cli(berthd, "run", "-d", "--name", name, busybox, "sh", "-c",
                  "echo started; exec sleep 300")
        assert res.returncode == 0, res.stderr
        cid = res.stdout.strip().decode()
        ps = cli(berthd, "ps", "--format", "{{.ID}} {{.Names}} {{.Status}}")
        assert f"{cid[:12]} {name} Up" in ps.stdout.decode()
        assert cli(berthd, "inspect", "-f", "{{.State.Running}}", name).stdout == b"true\n"
        ex = cli(berthd, "exec", "-i", name, "cat", stdin=b"via exec\n")
        assert (ex.returncode, ex.stdout) == (0, b"via exec\n"), ex.stderr
        for _ in range(50):
            logs = cli(berthd, "logs", name)
            if logs.stdout == b"started\n":
                break
        assert logs.stdout == b"started\n"
    finally:
        rm = cli(berthd, "rm", "-f", name)
    assert rm.returncode == 0, rm.stderr
