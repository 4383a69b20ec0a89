"""The host's device nodes as OCI linux.devices entries: what a privileged container gets.

dockerd (and containerd's CRI) give a privileged container every node of the host's /dev, from
runc's HostDevices walk; this is the same walk with the same skips. /dev/ptmx stays the
container's own (a link into its devpts, as runc's setupPtmx leaves it), and /dev/console is
the container's console, not the host's. A walk of /dev: call it off the event loop.
"""

from __future__ import annotations

import os
import stat
from typing import Any

SKIP_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
SKIP_FILES = frozenset({"console", "ptmx"})


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every character and block node below root (symlinks and number 0:0 left out)."""
    out: list[dict[str, Any]] = []
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = os.path.join(top, name)
            if top == root and name in SKIP_FILES:
                continue
            try:
                st = os.lstat(path)
            except OSError:  # gone while we walked (hotplug)
                continue
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) or not st.st_rdev:
                continue
            out.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                        "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                        "gid": st.st_gid})
    return out
