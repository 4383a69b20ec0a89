"""OCI lifecycle hooks (runtime-spec config.md, "POSIX-platform Hooks").

A Berth container gets hooks only from CDI specs (containerEdits.hooks, `runtime/cdi.py`):
neither CRI nor the Docker API lets a client name one, so every hook comes from a file the
node's administrator installed, NVIDIA's `nvidia-ctk hook ...` entries for instance. Each hook
gets the container's state as JSON on stdin, the environment its entry names and nothing of
ours, the bundle as its working directory, a time limit, and its own session so a timeout
kills everything it started. Where each kind runs, as runc runs it:

- prestart, createRuntime: at create, once the mounts are made, before pivot_root; run by the
  monitor in the host's namespaces; a failure fails the create.
- createContainer: right after them, run by the init child in the container's namespaces
  (the host's tree still visible); a failure fails the create.
- startContainer: at start, before the process's exec, run by the init child in the
  container's root; a failure fails the start.
- poststart (after the exec) and poststop (at delete, once the cgroup is gone): run by the
  monitor; a failure is logged.

The monitor waits for its hooks (create and start already wait for the child), so a hook
without a `timeout` gets `DEFAULT_TIMEOUT`: a hung hook must not hold every other container's
operations for ever.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from runtime import spec as oci

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")
DEFAULT_TIMEOUT = 30.0  # seconds, for a hook whose entry gives none
OUTPUT_KEPT = 2048  # bytes of a failed hook's output quoted in the error


class HookError(oci.ProcessError):
    """A hook could not run, failed or timed out; the message names its kind and path."""


@dataclass(frozen=True)
class Hook:
    """One validated entry of spec.hooks.<kind>."""

    path: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class State:
    """What every hook reads on stdin, less the status and pid that change with the kind."""

    id: str
    bundle: str
    annotations: dict[str, str] = field(default_factory=dict)

    def encode(self, status: str, pid: int = 0) -> bytes:
        doc: dict[str, Any] = {"ociVersion": oci.OCI_VERSION, "id": self.id, "status": status,
                               "bundle": self.bundle, "annotations": self.annotations}
        if pid:
            doc["pid"] = pid
        return json.dumps(doc).encode()


def parse(spec: dict[str, Any]) -> dict[str, list[Hook]]:
    """spec.hooks, checked before anything is created: ValueError names the bad entry."""
    raw = spec.get("hooks") or {}
    if not isinstance(raw, dict):
        raise ValueError("hooks must be a mapping of hook kind to a list of hooks")
    out: dict[str, list[Hook]] = {}
    for kind, entries in raw.items():
        if kind not in KINDS:
            raise ValueError(f"hooks: unknown kind {str(kind)[:64]!r} (one of {', '.join(KINDS)})")
        if not isinstance(entries, list):
            raise ValueError(f"hooks.{kind} must be a list")
        if entries:
            out[kind] = [_hook(kind, i, e) for i, e in enumerate(entries)]
    return out


def _hook(kind: str, i: int, e: Any) -> Hook:
    where = f"hooks.{kind}[{i}]"
    if not isinstance(e, dict):
        raise ValueError(f"{where} must be a mapping")
    path = e.get("path")
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        raise ValueError(f"{where}: path must be an absolute path")
    args = e.get("args") or [path]
    env = e.get("env") or []
    for name, items in (("args", args), ("env", env)):
        if not isinstance(items, list) or not all(isinstance(a, str) and "\0" not in a
                                                  for a in items):
            raise ValueError(f"{where}: {name} must be a list of strings")
    if not all("=" in v for v in env):
        raise ValueError(f"{where}: env entries must be KEY=VALUE")
    timeout = e.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or timeout <= 0):
        raise ValueError(f"{where}: timeout must be a whole number of seconds above 0")
    return Hook(path, tuple(args), tuple(env), float(timeout or DEFAULT_TIMEOUT))


def run_all(kind: str, hooks: dict[str, list[Hook]], state: bytes, cwd: str | None) -> None:
    """Run one kind's hooks in order; the first failure stops the rest (HookError)."""
    for hook in hooks.get(kind, ()):
        run(kind, hook, state, cwd)


def run(kind: str, hook: Hook, state: bytes, cwd: str | None) -> None:
    """Run one hook to its exit: HookError on a spawn failure, a non-zero exit or the timeout."""
    name = f"{kind} hook {hook.path}"
    stdin = os.memfd_create("berth-hook-state", os.MFD_CLOEXEC)  # never blocks on a non-reader
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(stdin, state)
        os.lseek(stdin, 0, os.SEEK_SET)
        try:
            proc = subprocess.Popen(
                list(hook.args), executable=hook.path, stdin=stdin, stdout=out_w,
                stderr=out_w, env=dict(v.split("=", 1) for v in hook.env),
                cwd=cwd if cwd and os.path.isdir(cwd) else "/", close_fds=True,
                start_new_session=True)
        except OSError as e:
            raise HookError(f"{name}: {e.strerror or e}") from None
        os.close(out_w)
        out_w = -1
        output, timed_out = _wait(proc, out_r, hook.timeout)
    finally:
        for fd in (stdin, out_r, out_w):
            if fd >= 0:
                os.close(fd)
    if timed_out:
        raise HookError(f"{name}: timed out after {hook.timeout:g} s")
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        text = output.decode(errors="replace").strip()
        raise HookError(f"{name}: {how}" + (f": {text}" if text else ""))


def _wait(proc: subprocess.Popen[bytes], out_r: int, timeout: float) -> tuple[bytes, bool]:
    """Wait for the hook itself (not for whatever it left holding its stdout), keeping the last
    OUTPUT_KEPT bytes it wrote; on the timeout kill its whole session."""
    pidfd = os.pidfd_open(proc.pid)
    kept = b""
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(out_r, select.POLLIN)
        deadline = time.monotonic() + timeout
        done = False
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return kept, True
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    done = True
                elif chunk := os.read(out_r, 65536):
                    kept = (kept + chunk)[-OUTPUT_KEPT:]
                else:
                    poller.unregister(out_r)
        os.set_blocking(out_r, False)
        with contextlib.suppress(BlockingIOError):  # what it wrote just before it exited
            while chunk := os.read(out_r, 65536):
                kept = (kept + chunk)[-OUTPUT_KEPT:]
        proc.wait()
        return kept, False
    finally:
        os.close(pidfd)


