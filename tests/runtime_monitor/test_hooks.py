"""OCI hooks through the monitor: each kind runs once, at its point, in its namespaces, with the
state on stdin; a failing or hung create-time hook fails the create and leaves nothing; a
failing post hook is only logged; a bad hooks entry is refused before anything is made."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime.containers import MonitorError
from tests.runtime_monitor.conftest import pid_alive, spec

pytestmark = pytest.mark.timeout(60)

RECORDER = """#!/bin/sh
# argv[1] = the kind; the state goes to $OUT/<kind>.json, our uts and mnt ns beside it
cat > "$OUT/$1.json"
readlink /proc/self/ns/uts > "$OUT/$1.uts"
readlink /proc/self/ns/mnt > "$OUT/$1.mnt"
"""


def _recorder(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    return script, out


def _hook(script: Path, kind: str, out: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(script), "args": [script.name, kind], "env": [f"OUT={out}"], **extra}


def _with_hooks(sp: dict[str, Any], hooks: dict[str, Any]) -> dict[str, Any]:
    sp["hooks"] = hooks
    sp["annotations"] = {"test": "hooks"}
    return sp


def test_every_kind_runs_at_its_point(mon, rootfs, tmp_path):
    c = mon.client
    script, out = _recorder(tmp_path)
    flag = f"started-{uuid.uuid4().hex[:8]}"
    hooks = {k: [_hook(script, k, out)]
             for k in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
    # startContainer resolves in the container: its own shell, writing into its own /tmp
    hooks["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", f"echo ok > /tmp/{flag}"]}]
    sp = _with_hooks(spec("sh", "-c", f"test -f /tmp/{flag} && rm /tmp/{flag}"), hooks)
    st = c.create("h1", sp, str(rootfs))
    for kind in ("prestart", "createRuntime", "createContainer"):
        state = json.loads((out / f"{kind}.json").read_text())
        assert state["id"] == "h1" and state["status"] == "creating"
        assert state["pid"] == st.pid and state["bundle"] == str(rootfs.parent)
        assert state["annotations"] == {"test": "hooks"}
    host_uts = os.readlink("/proc/self/ns/uts")
    assert (out / "createRuntime.uts").read_text().strip() == host_uts
    assert (out / "createContainer.uts").read_text().strip() == os.readlink(
        f"/proc/{st.pid}/ns/uts")
    assert (out / "createContainer.mnt").read_text().strip() == os.readlink(
        f"/proc/{st.pid}/ns/mnt")
    assert not (out / "poststart.json").exists()
    c.start("h1")
    assert json.loads((out / "poststart.json").read_text())["status"] == "running"
    done = c.wait("h1", timeout=20)
    assert done.exit_code == 0, "the startContainer hook did not run in the container's root"
    assert not (out / "poststop.json").exists()
    c.delete("h1")
    state = json.loads((out / "poststop.json").read_text())
    assert state["status"] == "stopped" and "pid" not in state


def test_failing_create_hook_fails_the_create(mon, rootfs, tmp_path):
    c = mon.client
    for kind in ("createRuntime", "createContainer"):
        sp = _with_hooks(spec("true"), {kind: [
            {"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]})
        with pytest.raises(MonitorError, match=f"{kind} hook /bin/sh: exit status 3: boom"):
            c.create("h2", sp, str(rootfs))
        assert c.list() == []
        assert not Path(mon.state_dir, "containers", "h2").exists()


def test_hung_hook_is_killed_at_its_timeout(mon, rootfs, tmp_path):
    c = mon.client
    marker = f"berth-hook-hang-{uuid.uuid4().hex[:8]}"
    sp = _with_hooks(spec("true"), {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"sleep 60 {marker} & exec sleep 60"],
         "timeout": 1}]})
    with pytest.raises(MonitorError, match="createRuntime hook /bin/sh: timed out after 1 s"):
        c.create("h3", sp, str(rootfs))
    assert c.list() == []
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == "", f"the hook's own child outlived the timeout: {left}"


def test_failing_post_hooks_are_only_logged(mon, rootfs):
    c = mon.client
    fail = [{"path": "/bin/false"}]
    st = c.create("h4", _with_hooks(spec("true"), {"poststart": fail, "poststop": fail}),
                  str(rootfs))
    c.start("h4")
    assert c.wait("h4", timeout=20).exit_code == 0
    c.delete("h4")
    assert not pid_alive(st.pid)
    assert c.list() == []


def test_startcontainer_failure_fails_the_start(mon, rootfs):
    c = mon.client
    c.create("h5", _with_hooks(spec("true"), {"startContainer": [{"path": "/no/such/hook"}]}),
             str(rootfs))
    with pytest.raises(MonitorError, match="startContainer hook /no/such/hook: No such file"):
        c.start("h5")
    assert c.wait("h5", timeout=10).exit_code != 0


@pytest.mark.parametrize(("hooks", "message"), [
    ({"createRuntime": [{"path": "relative/hook"}]}, r"hooks.createRuntime\[0\]: path must be"),
    ({"onCreate": [{"path": "/bin/true"}]}, "unknown kind 'onCreate'"),
    ({"poststop": [{"path": "/bin/true", "timeout": 0}]}, "timeout must be"),
    ({"prestart": [{"path": "/bin/true", "env": ["NOEQUALS"]}]}, "KEY=VALUE"),
    ({"prestart": {"path": "/bin/true"}}, "hooks.prestart must be a list"),
])
def test_bad_hooks_are_refused_before_anything_runs(mon, rootfs, hooks, message):
    c = mon.client
    with pytest.raises(MonitorError, match=message):
        c.create("h6", _with_hooks(spec("true"), hooks), str(rootfs))
    assert c.list() == []
