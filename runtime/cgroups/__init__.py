"""cgroups for containers: one CgroupDriver contract, a v1 and a v2 driver, picked by `driver()`.

OOM reporting: call `oom_kill_count(path)` after the container exits and BEFORE `remove(path)`;
the counter lives in the cgroup and is gone once it is removed.
"""

from __future__ import annotations

import os

from runtime.cgroups.model import IO_KEYS, CgroupDriver, CgroupStats, IoLimit, Resources
from runtime.cgroups.v1 import V1Driver
from runtime.cgroups.v2 import V2Driver, shares_to_weight

__all__ = ["IO_KEYS", "CgroupDriver", "CgroupStats", "IoLimit", "Resources", "V1Driver",
           "V2Driver", "detect", "driver", "shares_to_weight"]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape")


def detect(root: str = "/sys/fs/cgroup") -> str:
    """'v2' only when `root` itself is cgroup2; a hybrid host's unified subdir does not count."""
    target = os.path.realpath(root)
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if _unescape(left.split()[4]) == target:
                fstype = right.split()[0]  # later mounts shadow earlier ones: keep the last
    return "v2" if fstype == "cgroup2" else "v1"


def driver(root: str = "/sys/fs/cgroup") -> CgroupDriver:
    return V2Driver(root) if detect(root) == "v2" else V1Driver(root)
