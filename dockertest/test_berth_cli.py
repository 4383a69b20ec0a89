"""The `berth` command (berthcli/) against each daemon: a docker-py client, presentation only."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from berthcli.client import DEFAULT_HOST, resolve_host
from dockertest.harness import Daemon

BERTH = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "berth"


def berth(dk: Daemon, *args: str, input: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    res = subprocess.run([str(BERTH), "-H", dk.host, *args], input=input, capture_output=True,
                         text=True, timeout=120, check=False,
                         stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"berth {args} exited {res.returncode}: {res.stderr}")
    return res


def test_host_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert resolve_host(None) == DEFAULT_HOST == "unix:///run/berth/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/x.sock")
    assert resolve_host(None) == "unix:///tmp/x.sock"
    assert resolve_host("unix:///tmp/y.sock") == "unix:///tmp/y.sock"


def test_unreachable_daemon_says_so(tmp_path: Path) -> None:
    res = subprocess.run([str(BERTH), "-H", f"unix://{tmp_path}/none.sock", "ps"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "none.sock" in res.stderr and "Traceback" not in res.stderr


def test_run_foreground(dk: Daemon) -> None:
    res = berth(dk, "run", "--rm", "--name", "bc-fg", "-e", "V=x", "-w", "/tmp", "-u", "1000",
                dk.busybox, "sh", "-c", 'echo "$V $(pwd) $(id -u)"; echo e >&2; exit 4',
                check=False)  # fmt: skip
    assert res.returncode == 4, res.stderr
    assert res.stdout == "x /tmp 1000\n" and "e\n" in res.stderr
    assert dk.api.containers(all=True, filters={"name": "bc-fg"}) == []  # --rm removed it


def test_run_stdin(dk: Daemon) -> None:
    res = berth(dk, "run", "--rm", "-i", dk.busybox, "sh", "-c", "tr a-z A-Z",
                input="piped\n")  # fmt: skip
    assert res.stdout == "PIPED\n"


def test_detached_lifecycle(dk: Daemon) -> None:
    """run -d, ps, logs, exec -i, inspect, stop, rm: every verb on one container."""
    cid = berth(dk, "run", "-d", "--name", "bc-life", "-l", "bc=1", "--memory", "32m",
                dk.busybox, "sh", "-c", "echo hello; exec sleep 300").stdout.strip()  # fmt: skip
    assert dk.api.inspect_container(cid)["HostConfig"]["Memory"] == 32 << 20
    table = berth(dk, "ps", "--filter", "label=bc=1").stdout.splitlines()
    assert table[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    assert cid[:12] in table[1] and table[1].rstrip().endswith("bc-life")
    assert berth(dk, "ps", "-q", "--no-trunc", "-f", "name=bc-life").stdout.split() == [cid]
    assert berth(dk, "logs", "bc-life").stdout == "hello\n"
    res = berth(dk, "exec", "-i", "bc-life", "sh", "-c", "cat; exit 5", input="in\n",
                check=False)  # fmt: skip
    assert res.returncode == 5 and res.stdout == "in\n"
    info = json.loads(berth(dk, "inspect", "bc-life").stdout)
    assert info[0]["Id"] == cid and info[0]["Name"] == "/bc-life"
    assert berth(dk, "stop", "-t", "1", "bc-life").stdout.strip() == "bc-life"
    assert berth(dk, "rm", "bc-life").stdout.strip() == "bc-life"
    res = berth(dk, "rm", "bc-life", check=False)
    assert res.returncode == 1 and "No such container" in res.stderr


def test_images_and_inspect_image(dk: Daemon) -> None:
    repo, tag = dk.busybox.rsplit(":", 1)
    rows = [ln.split() for ln in berth(dk, "images").stdout.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(r[:2] == [repo, tag] for r in rows[1:])
    info = json.loads(berth(dk, "inspect", "--type", "image", dk.busybox).stdout)
    assert dk.busybox in info[0]["RepoTags"]


def test_pull_plain_lines_then_rmi(dk: Daemon) -> None:
    ref = dk.images["layers"]
    berth(dk, "rmi", ref, check=False)
    out = berth(dk, "pull", ref).stdout
    assert "\x1b[" not in out  # no cursor movement when stdout is not a terminal
    assert out.count("Pull complete") + out.count("Already exists") == 4
    assert f"Status: Downloaded newer image for {ref}" in out
    removed = berth(dk, "rmi", ref).stdout
    assert f"Untagged: {ref}" in removed


def test_pull_bars_on_a_terminal(dk: Daemon) -> None:
    ref = dk.images["big"]
    berth(dk, "rmi", ref, check=False)
    main, sub = pty.openpty()
    proc = subprocess.Popen([str(BERTH), "-H", dk.host, "pull", ref], stdout=sub,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(sub)  # the child holds the only other end: EIO once it exits
    drawn = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)  # read while it draws, or the pty buffer fills
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main)
    assert proc.wait(timeout=300) == 0, drawn[-2000:]
    assert b"\x1b[" in drawn and b"[=" in drawn and b"MB/" in drawn
    berth(dk, "rmi", ref)


def test_unknown_image_error(dk: Daemon) -> None:
    missing = dk.busybox.rsplit("/", 2)[0] + "/e2e/none:1.0"
    res = berth(dk, "run", "--rm", missing, "true", check=False)
    assert res.returncode != 0 and "none" in res.stderr and "Traceback" not in res.stderr


def test_build_tag_push(dk: Daemon, registry, tmp_path: Path) -> None:
    """berth build / tag / push, and the pushed image pulls back as the same one."""
    import uuid

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {dk.busybox}\nARG WHAT\nRUN echo $WHAT > /what\n"
                                    'CMD ["cat", "/what"]\n')
    name = f"bc-built-{uuid.uuid4().hex[:6]}:1"
    out = berth(dk, "build", "-t", name, "--build-arg", "WHAT=built-by-berth", str(ctx)).stdout
    assert "Step 3/4" in out and "Successfully built" in out
    image_id = berth(dk, "build", "-q", "-t", name, "--build-arg", "WHAT=built-by-berth",
                     str(ctx)).stdout.strip()
    assert image_id.startswith("sha256:")
    target = f"{registry.host}/bc-pushed-{uuid.uuid4().hex[:6]}:1"
    berth(dk, "tag", name, target)
    pushed = berth(dk, "push", target).stdout
    assert "Pushed" in pushed or "Mounted from" in pushed or "already exists" in pushed
    berth(dk, "rmi", target)
    berth(dk, "rmi", name)
    berth(dk, "pull", "-q", target)
    assert berth(dk, "run", "--rm", target).stdout == "built-by-berth\n"
    berth(dk, "rmi", target)
