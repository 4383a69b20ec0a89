"""Pod sysctls: only namespaced keys, only when the pod owns that namespace, no key injection.

CVE-2022-0811 (cr8escape) smuggled a second `key=value` through a sysctl value; both names and
values are therefore checked against a strict alphabet before anything is written. Interface
names containing '.' (slash form net/ipv4/conf/eth0.100/...) are refused rather than guessed at.
"""

from __future__ import annotations

import os
import re

_IPC_EXACT = {"kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
              "kernel.shm_rmid_forced", "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
              "kernel.msg_next_id", "kernel.sem_next_id", "kernel.shm_next_id"}
_UTS_EXACT = {"kernel.hostname", "kernel.domainname"}
_NAME = re.compile(r"[a-z0-9_][a-z0-9_\-]*(?:\.[a-zA-Z0-9_][a-zA-Z0-9_\-]*)*")
_VALUE = re.compile(r"[A-Za-z0-9 \t._:\-]*")
_MAX_VALUE = 4096


def _namespace(name: str) -> str:
    """Which namespace makes `name` per-pod; ValueError when it is node-wide."""
    if name in _IPC_EXACT or name.startswith("fs.mqueue."):
        return "ipc"
    if name in _UTS_EXACT:
        return "uts"
    if name.startswith("net."):
        return "net"
    raise ValueError(f"sysctl {name!r} is not namespaced and cannot be set for a pod")


def normalize(name: str) -> str:
    """Accepts the slash form kubelet allows (net/ipv4/ip_forward) and returns the dotted one."""
    if "/" in name and "." not in name.split("/")[0]:
        return name.translate(str.maketrans("./", "/."))
    return name


def validate(sysctls: dict[str, str], *, host_net: bool, host_ipc: bool, host_uts: bool) -> None:
    """Raises ValueError for any sysctl a pod must not set; checks everything before writing."""
    host = {"net": host_net, "ipc": host_ipc, "uts": host_uts}
    for raw, value in sysctls.items():
        name = normalize(raw)
        if not _NAME.fullmatch(name) or ".." in name or "/" in name or len(name) > 255:
            raise ValueError(f"sysctl name {raw!r} is malformed")
        ns = _namespace(name)
        if host[ns]:
            raise ValueError(f"sysctl {raw!r} needs a private {ns} namespace, but the pod "
                             f"shares the host's")
        if not isinstance(value, str) or len(value) > _MAX_VALUE or not _VALUE.fullmatch(value):
            raise ValueError(f"sysctl {raw!r} value {value!r} has forbidden characters "
                             f"('+', '=', newline, NUL and other control characters are refused)")


def apply(sysctls: dict[str, str], proc_sys: str = "/proc/sys") -> None:
    """Writes each sysctl; run inside the container's namespaces so only they change."""
    for raw, value in sysctls.items():
        name = normalize(raw)
        if "/" in name or ".." in name.split("."):
            raise ValueError(f"sysctl name {raw!r} is malformed")
        path = os.path.join(proc_sys, *name.split("."))
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
