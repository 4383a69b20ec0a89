"""The Debian docker CLI (20.10) as a client of berthd: run attached, -i stdin, ps, logs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

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


def test_limits_seen_in_the_cgroup(berthd, busybox):
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us "
              "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max "
              "/sys/fs/cgroup/cpu.max")
    res = cli(berthd, "run", "--rm", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "42",
              busybox, "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    words = res.stdout.split()
    assert str(64 << 20).encode() in words and b"42" in words
    assert words[-2:] in ([b"50000", b"100000"],) or b"50000" in words


def test_env_workdir_user_flags(berthd, busybox):
    res = cli(berthd, "run", "--rm", "-e", "A=b", "-w", "/tmp", "-u", "1000:1000", busybox,
              "sh", "-c", "echo $A; pwd; id -u; id -g")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [b"b", b"/tmp", b"1000", b"1000"]


def test_stop_t1_restart_policy_stats_events(berthd, busybox):
    try:
        started = cli(berthd, "run", "-d", "--name", "cli-stubborn", busybox, "sh", "-c",
                      "trap '' TERM; while true; do sleep 1; done")
        assert started.returncode == 0, started.stderr
        stats = cli(berthd, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}",
                    "cli-stubborn")
        assert stats.returncode == 0 and stats.stdout.startswith(b"cli-stubborn "), stats
        assert cli(berthd, "stop", "-t", "1", "cli-stubborn").returncode == 0
        code = cli(berthd, "inspect", "-f", "{{.State.ExitCode}}", "cli-stubborn").stdout
        assert code == b"137\n"
        flaky = cli(berthd, "run", "-d", "--name", "cli-flaky", "--restart", "on-failure:2",
                    busybox, "sh", "-c", "exit 1")
        assert flaky.returncode == 0, flaky.stderr
        for _ in range(300):
            count = cli(berthd, "inspect", "-f", "{{.RestartCount}} {{.State.Status}}",
                        "cli-flaky").stdout
            if count == b"2 exited\n":
                break
            time.sleep(0.1)
        assert count == b"2 exited\n"
        time.sleep(1.5)  # the CLI sends --until in whole seconds: let the last die age past it
        events = cli(berthd, "events", "--since", "2m", "--until", "0s", "--filter",
                     "container=cli-flaky", "--format", "{{.Action}}")
        assert events.stdout.split().count(b"die") == 3, events.stdout
    finally:
        cli(berthd, "rm", "-f", "cli-stubborn", "cli-flaky")
