"""Exec a delegated (IPAM) plugin from CNI_PATH exactly as the spec describes, so any IPAM works."""

from __future__ import annotations

import os

from cni_plugins import lean, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni_plugins.skel import Handler


def find(name: str, path: list[str]) -> str:
    if "/" in name:
        raise CNIError(skel.E_INVALID_CONFIG, f"invalid plugin name {name!r}")
    for d in path:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(skel.E_INVALID_CONFIG, f"failed to find plugin {name!r} in path {path}")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trailer(name: str, root: str) -> bytes:
    """Appended to each C launcher (ELF ignores it): which plugin, from which checkout."""
    return b"\0berth-cni-launcher\0" + name.encode() + b"\0" + root.encode() + b"\0"


def is_our_launcher(exe: str, name: str) -> bool:
    """True when exe would only run this very code for `name` (what it holds, not its path)."""
    want = trailer(name, ROOT)
    try:
        with open(exe, "rb") as f:
            f.seek(-len(want), os.SEEK_END)
            return f.read() == want
    except OSError:
        return False


def _in_process(kind: str) -> dict[str, Handler] | None:
    """Handlers of the plugins whose code may run inside the delegating plugin."""
    if kind == "host-local":
        from cni_plugins import host_local

        return host_local.HANDLERS
    if kind == "bridge":
        from cni_plugins import bridge

        return bridge.HANDLERS
    return None


def call(
    kind: str, command: str, args: Args, stdin: bytes | None = None
) -> dict[str, Any] | None:
    """Run `kind` with our env (CNI_COMMAND overridden) and our config, or `stdin`, on stdin.

    When CNI_PATH's `kind` is our own host-local or bridge launcher, its code runs in this
    process instead: same handlers, same env and stdin, same result, minus an exec and a fork.
    """
    exe = find(kind, args.path)
    env = dict(os.environ)
    env["CNI_COMMAND"] = command
    conf = args.raw_conf if stdin is None else stdin
    parsed: dict[str, Any] | None = None
    stderr = b""
    handlers = _in_process(kind)
    if handlers is not None and is_our_launcher(exe, kind):
        rc, parsed = skel.invoke(handlers, env, conf, kind)
    else:
        rc, stdout, stderr = lean.run([exe], conf, env)
        out = stdout.strip()
        if out:
            try:
                parsed = lean.loads(out)
            except ValueError as exc:
                msg = f"{kind} returned invalid JSON"
                raise CNIError(skel.E_DECODE, msg, out.decode()) from exc
    if rc != 0:
        if parsed and "code" in parsed:
            msg, details = str(parsed.get("msg", "")), str(parsed.get("details", ""))
            raise CNIError(int(parsed["code"]), msg, details)
        raise CNIError(skel.E_IO, f"{kind} {command} failed", stderr.decode(errors="replace"))
    return parsed
