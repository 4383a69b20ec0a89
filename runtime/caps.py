"""Linux capabilities for the container init, via prctl(2) and capset(2) v3 through ctypes.

Order in the init: `set_keepcaps(True)` before changing uid, `drop_bounding`, the uid/gid
switch, then `set_caps` and last `set_ambient` (ambient caps must already be permitted and
inheritable). Unknown capability names raise ValueError naming the culprit.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterable

CAPS: dict[str, int] = {
    name: num
    for num, name in enumerate(
        [
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
            "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
            "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
            "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
            "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
        ]
    )
}

_DEFAULT = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def default_caps() -> list[str]:
    """containerd's default 14 capabilities, the set a CRI container gets unless told otherwise."""
    return list(_DEFAULT)


class UnknownCapability(ValueError):
    """A name no kernel capability has; `name` is it, normalised, for the front end's message."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown capability {name}")
        self.name = name


def normalize(name: str) -> str:
    """`net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are one capability to both front ends."""
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


@functools.cache
def grantable() -> frozenset[str]:
    """What "all" can mean: the capabilities berthd itself holds, since one outside its bounding
    set fails the init's capset."""
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("CapBnd:"))
    bits = int(line.split()[1], 16)
    return frozenset(n for n, num in CAPS.items() if bits >> num & 1)


def container_set(privileged: bool, drop: Iterable[str], add: Iterable[str]) -> list[str]:
    """A container's capabilities as containerd and dockerd both work them out: the default set
    (everything grantable when privileged), minus the drops, plus the adds, `ALL` counting on
    either side. Raises UnknownCapability before anything is computed."""
    drops, adds = [normalize(c) for c in drop], [normalize(c) for c in add]
    for name in drops + adds:
        if name != "CAP_ALL" and name not in CAPS:
            raise UnknownCapability(name)
    current = set(grantable()) if privileged else set(_DEFAULT)
    if "CAP_ALL" in drops:
        current = set()
    current -= set(drops)
    current |= set(grantable()) if "CAP_ALL" in adds else set(adds) - {"CAP_ALL"}
    return sorted(current)


def numbers(names: Iterable[str]) -> set[int]:
    """Maps names (with or without the CAP_ prefix, any case) to numbers; ValueError on unknown."""
    out = set()
    for name in names:
        key = normalize(name)
        if key not in CAPS:
            raise ValueError(f"unknown capability {name!r}")
        out.add(CAPS[key])
    return out


def mask(names: Iterable[str]) -> int:
    """Bitmask of the named caps, as /proc/<pid>/status shows them."""
    return sum(1 << n for n in numbers(names))


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    rc = _libc.prctl(option, arg2, arg3, 0, 0)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg2}): {os.strerror(err)}")
    return int(rc)


def _read_last_cap() -> int:
    """The running kernel's highest cap; our table may be older or newer than the kernel."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


# Read at import: container inits drop caps after pivot_root, where /proc may not exist.
LAST_CAP = _read_last_cap()


def drop_bounding(keep: set[str]) -> None:
    """Drops from the bounding set every cap the kernel knows that is not in `keep`."""
    wanted = numbers(keep)
    for cap in range(LAST_CAP + 1):
        if cap not in wanted and _prctl(_PR_CAPBSET_READ, cap) == 1:
            _prctl(_PR_CAPBSET_DROP, cap)


def set_keepcaps(on: bool) -> None:
    """Keeps permitted caps across setuid away from root (cleared again by execve)."""
    _prctl(_PR_SET_KEEPCAPS, 1 if on else 0)


def set_caps(effective: set[str], permitted: set[str], inheritable: set[str]) -> None:
    """Sets the three sets with capset(2) v3 (two 32-bit words per set)."""
    eff, prm, inh = mask(effective), mask(permitted), mask(inheritable)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (eff >> shift) & 0xFFFFFFFF
        data[i].permitted = (prm >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inh >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def set_ambient(names: set[str]) -> None:
    """Replaces the ambient set; each cap must be permitted and inheritable already."""
    wanted = numbers(names)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(wanted):
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap)
