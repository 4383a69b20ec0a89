"""Mount propagation facts from /proc/self/mountinfo: which mount holds a path, shared or slave.

Volumes with CRI propagation need the right kind of host mount under them, as containerd and
Docker require: a Bidirectional (rshared) source must sit on a shared mount, a HostToContainer
(rslave) source on a shared or slave one. Otherwise the container's bind would start a peer group
of its own and the promised propagation would silently not happen. Berth refuses such a volume
with an error naming the path and its mount; it never changes the host's propagation itself
(kubelet makes its own root dir rshared; an operator does the same for other hostPaths).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_OCTAL = re.compile(r"\\([0-7]{3})")


class PropagationError(ValueError):
    """A volume's source cannot give the propagation asked for."""


@dataclass(frozen=True)
class MountEntry:
    """One mountinfo line, reduced to what propagation needs."""

    mount_point: str
    shared: bool
    slave: bool


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """The calling process's mounts in mountinfo order (later entries cover earlier ones)."""
    out = []
    with open(mountinfo) as fh:
        for line in fh:
            fields = line.split()
            optional = fields[6:fields.index("-")]
            out.append(MountEntry(_unescape(fields[4]),
                                  any(f.startswith("shared:") for f in optional),
                                  any(f.startswith("master:") for f in optional)))
    return out


def mount_of(path: str, table: list[MountEntry] | None = None) -> MountEntry:
    """The mount that holds `path` (symlinks resolved): the last one whose point prefixes it."""
    real = os.path.realpath(path)
    best: MountEntry | None = None
    for entry in table if table is not None else mount_table():
        point = entry.mount_point
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    if best is None:
        raise PropagationError(f"no mount holds {path}")
    return best


def check_source(path: str, propagation: str) -> None:
    """Refuse a volume source whose host mount cannot carry `propagation` (rshared/rslave)."""
    if propagation not in ("rshared", "rslave"):
        return
    entry = mount_of(path)
    if propagation == "rshared" and not entry.shared:
        raise PropagationError(
            f"path {path} is mounted on {entry.mount_point}, which is not a shared mount: "
            "Bidirectional propagation needs it shared (mount --make-rshared "
            f"{entry.mount_point}, or bind the path onto itself and make that rshared)")
    if propagation == "rslave" and not (entry.shared or entry.slave):
        raise PropagationError(
            f"path {path} is mounted on {entry.mount_point}, which is neither a shared nor a "
            "slave mount: HostToContainer propagation needs it shared "
            f"(mount --make-rshared {entry.mount_point})")
