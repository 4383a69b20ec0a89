"""Exec a delegated (IPAM) plugin from CNI_PATH exactly as the spec describes, so any IPAM works."""

from __future__ import annotations

import os

from cni_plugins import lean, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def find(name: str, path: list[str]) -> str:
    if "/" in name:
        raise CNIError(skel.E_INVALID_CONFIG, f"invalid plugin name {name!r}")
    for d in path:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(skel.E_INVALID_CONFIG, f"failed to find plugin {name!r} in path {path}")


def call(kind: str, command: str, args: Args) -> dict[str, Any] | None:
    """Run `kind` with our env (CNI_COMMAND overridden) and the same config on stdin."""
    exe = find(kind, args.path)
    env = dict(os.environ)
    env["CNI_COMMAND"] = command
    rc, stdout, stderr = lean.run([exe], args.raw_conf, env)
    out = stdout.strip()
    parsed: dict[str, Any] | None = None
    if out:
        try:
            parsed = lean.loads(out)
        except ValueError as exc:
            raise CNIError(skel.E_DECODE, f"{kind} returned invalid JSON", out.decode()) from exc
    if rc != 0:
        if parsed and "code" in parsed:
            msg, details = str(parsed.get("msg", "")), str(parsed.get("details", ""))
            raise CNIError(int(parsed["code"]), msg, details)
        raise CNIError(skel.E_IO, f"{kind} {command} failed", stderr.decode(errors="replace"))
    return parsed
