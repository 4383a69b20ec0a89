"""Durable per-container state: what survives a monitor or berthd restart."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from runtime import hooks

CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"

REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_OOM = "OOMKilled"
REASON_MONITOR_LOST = "MonitorLost"


@dataclass
class ContainerState:
    """The record kept in `<state_dir>/containers/<id>/state.json`; times are ns since epoch."""

    id: str
    status: str = CREATED
    pid: int = 0
    pid_start: int = 0  # /proc/<pid>/stat starttime: tells our process from a reused pid
    created_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    log_path: str = ""
    cgroup_path: str = ""
    rootfs: str = ""
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, also the wire form of the monitor protocol."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerState:
        """Tolerate unknown keys so a newer file does not break an older reader."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def container_dir(state_dir: str, cid: str) -> Path:
    """Where one container's durable files live."""
    return Path(state_dir) / "containers" / cid


def save(state_dir: str, st: ContainerState, sync: bool = False) -> None:
    """Write atomically (tmp, rename) so a crash leaves the old or the new record.

    The rename alone survives a monitor crash (the page cache does). Only the exit record is
    fsynced (sync=True): it cannot be recomputed, while a created/running record lost to power
    loss describes a container that died with the node and is reported MonitorLost either way.
    fsync costs ~5 ms here and blocks the monitor's loop, so it is not spent on every change.
    """
    d = container_dir(state_dir, st.id)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(st.to_dict()).encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, d / "state.json")


def load_all(state_dir: str) -> list[ContainerState]:
    """Every readable record; a torn or foreign directory is skipped, not fatal."""
    root = Path(state_dir) / "containers"
    out: list[ContainerState] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        try:
            out.append(ContainerState.from_dict(json.loads((d / "state.json").read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def remove(state_dir: str, cid: str) -> None:
    """Forget a container."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(container_dir(state_dir, cid))


POST_HOOKS = "hooks.json"


def save_post_hooks(state_dir: str, cid: str, state: hooks.State,
                    spec_hooks: dict[str, Any]) -> None:
    """Keep poststart/poststop (already validated at create) beside the record: poststop
    runs at delete, which may come from a later monitor. No file when there are none."""
    post = {k: spec_hooks[k] for k in ("poststart", "poststop") if spec_hooks.get(k)}
    if post:
        doc = {"id": state.id, "bundle": state.bundle, "annotations": state.annotations, **post}
        (container_dir(state_dir, cid) / POST_HOOKS).write_text(json.dumps(doc))


def load_post_hooks(state_dir: str, cid: str
                    ) -> tuple[hooks.State, dict[str, list[hooks.Hook]]] | None:
    """What save_post_hooks kept, or None (also for an unreadable file: we wrote it from a
    spec that parsed, so there is nothing better to do than skip the hooks)."""
    try:
        doc = json.loads((container_dir(state_dir, cid) / POST_HOOKS).read_text())
        parsed = hooks.parse({"hooks": {k: doc[k] for k in ("poststart", "poststop")
                                        if k in doc}})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return hooks.State(doc["id"], doc["bundle"], doc.get("annotations") or {}), parsed


def proc_start_time(pid: int) -> int:
    """Kernel start time of pid in clock ticks, or 0 when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[19])
