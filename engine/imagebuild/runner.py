"""RUN: one short-lived container on Berth's own runtime, with Docker's default security.

The step's rootfs is an overlay the builder mounted (the parent's snapshots below, the new
layer's dir as upper); the container runs in it under the node monitor like any other, with the
default capabilities, the RuntimeDefault seccomp profile and no_new_privs. Output is attached
before the start, so not a byte is lost, and handed to the build stream as it comes.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime import seccomp
from runtime.containers import MonitorClient, MonitorError
from runtime.containers import NotFound as MonitorNotFound
from runtime.spec import DEFAULT_CAPS, default_spec, resolve_user

NETWORK_MODES = ("default", "bridge", "none", "host")


class RunError(Exception):
    """The step's container could not be run at all (not a non-zero exit)."""


@dataclass(frozen=True)
class RunStep:
    """What one RUN needs besides its rootfs."""

    args: list[str]
    env: list[str]
    cwd: str
    user: str
    network: str = "default"


class Runner:
    """Runs build steps through the node monitor, in cgroups under cgroup_parent."""

    def __init__(self, monitor: MonitorClient, cgroup_parent: str = "berth") -> None:
        self.monitor, self.cgroup_parent = monitor, cgroup_parent.strip("/")

    def spec(self, rootfs: Path, step: RunStep, cid: str) -> dict[str, object]:
        """Docker's defaults; `host` shares the node's network, every other mode gets a private
        network namespace with loopback only (see docs: builds do not join a bridge)."""
        namespaces = ("pid", "ipc", "uts", "mount") + (() if step.network == "host"
                                                       else ("network",))
        spec = default_spec(str(rootfs), step.args, hostname=cid[-12:], namespaces=namespaces,
                            seccomp=seccomp.default_profile(DEFAULT_CAPS))
        try:
            uid, gid, groups = resolve_user(str(rootfs), step.user or "0")
        except LookupError as e:
            raise RunError(f"unable to find user {step.user}: {e}") from None
        proc = spec["process"]
        proc["user"] = {"uid": uid, "gid": gid, "additionalGids": groups}
        proc["env"] = step.env
        proc["cwd"] = step.cwd or "/"
        spec["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        return spec

    async def run(self, rootfs: Path, step: RunStep, output: Callable[[bytes], None]) -> int:
        """The step's exit code; its stdout and stderr go to output, in order of arrival."""
        cid = f"build-{uuid.uuid4().hex}"
        spec = self.spec(rootfs, step, cid)
        try:
            await self.monitor.create(cid, spec, str(rootfs),
                                      cgroup_path=spec["linux"]["cgroupsPath"])  # type: ignore
        except MonitorError as e:
            raise RunError(f"cannot create the build container: {e}") from None
        try:
            session = await self.monitor.attach(cid, stdout=True, stderr=True)
            try:
                await self.monitor.start(cid)
                while (msg := await session.recv()) is not None:
                    output(msg[1])
            finally:
                session.close()
            st = await self.monitor.wait(cid)
            return st.exit_code
        except MonitorError as e:
            raise RunError(f"build container failed: {e}") from None
        finally:
            with contextlib.suppress(MonitorNotFound, MonitorError):
                await self.monitor.stop(cid, timeout=0, sig=signal.SIGKILL)
            with contextlib.suppress(MonitorNotFound, MonitorError):
                await self.monitor.delete(cid)
