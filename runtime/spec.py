"""Typed views over an OCI runtime-spec config dict: the fields Berth reads and their defaults."""

from __future__ import annotations

import errno
import os
import resource
from dataclasses import dataclass, field
from typing import Any

from runtime import libc

OCI_VERSION = "1.0.2"

NS_FLAGS: dict[str, int] = {
    "user": libc.CLONE_NEWUSER,
    "pid": libc.CLONE_NEWPID,
    "network": libc.CLONE_NEWNET,
    "ipc": libc.CLONE_NEWIPC,
    "uts": libc.CLONE_NEWUTS,
    "mount": libc.CLONE_NEWNS,
    "cgroup": libc.CLONE_NEWCGROUP,
    "time": libc.CLONE_NEWTIME,
}
# /proc/<pid>/ns/<name> for each OCI namespace type
NS_PROC_NAME: dict[str, str] = {
    "user": "user", "pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts",
    "mount": "mnt", "cgroup": "cgroup", "time": "time",
}
# setns order: user first (it grants the caps for the rest), mount last (paths change after it)
# Our callers are host root: every namespace is joined while that root still holds its caps, the
# user namespace last (the pod's ipc/uts/net belong to the host's, beyond a container's root).
NS_JOIN_ORDER = ["ipc", "uts", "network", "cgroup", "time", "pid", "mount", "user"]

RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
DEFAULT_MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]

# The device cgroup allows what the default /dev holds, like runc's default rules.
DEFAULT_DEVICES: list[dict[str, Any]] = [
    {k: v for k, v in (("allow", True), ("type", t), ("major", ma), ("minor", mi),
                       ("access", acc)) if v is not None}
    for t, ma, mi, acc in (("c", None, None, "m"), ("b", None, None, "m"), ("c", 1, 3, "rwm"),
                           ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"),
                           ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"),
                           ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"))
]


class ProcessError(RuntimeError):
    """The process section cannot be applied; the message is meant for the user as is."""


class UserNotFound(LookupError):
    """A user or group name that the rootfs's /etc/passwd or /etc/group does not know."""


@dataclass
class User:
    """process.user; uid/gid 0 when absent, as the spec says."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None


@dataclass
class Capabilities:
    """process.capabilities; a missing set means empty."""

    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


@dataclass
class Rlimit:
    """One process.rlimits entry, e.g. RLIMIT_NOFILE."""

    type: str
    soft: int
    hard: int


@dataclass
class Process:
    """process: what to exec and under which identity and confinement."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    no_new_privileges: bool = False
    rlimits: list[Rlimit] = field(default_factory=list)
    oom_score_adj: int | None = None
    terminal: bool = False


@dataclass
class Mount:
    """One mounts[] entry; options still contain both flags and data strings."""

    destination: str
    type: str = ""
    source: str = ""
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    """linux.namespaces[]: a new namespace when path is empty, else join the one at path."""

    type: str
    path: str = ""


@dataclass
class IdMapping:
    """One linux.uidMappings/gidMappings entry."""

    container_id: int
    host_id: int
    size: int


def parse_process(p: dict[str, Any]) -> Process:
    """Parse a process dict (config.json's or an exec request's)."""
    u = p.get("user") or {}
    user = User(int(u.get("uid", 0)), int(u.get("gid", 0)),
                [int(g) for g in u.get("additionalGids") or []], u.get("umask"))
    c = p.get("capabilities")
    caps = None
    if c is not None:
        caps = Capabilities(*(list(c.get(k) or []) for k in
                              ("bounding", "effective", "permitted", "inheritable", "ambient")))
    rl = [Rlimit(r["type"], int(r["soft"]), int(r["hard"])) for r in p.get("rlimits") or []]
    oom = p.get("oomScoreAdj")
    args = list(p.get("args") or [])
    if not args:
        raise ValueError("process.args must not be empty")
    return Process(args=args, env=list(p.get("env") or []), cwd=p.get("cwd") or "/",
                   user=user, capabilities=caps,
                   no_new_privileges=bool(p.get("noNewPrivileges", False)), rlimits=rl,
                   oom_score_adj=None if oom is None else int(oom),
                   terminal=bool(p.get("terminal", False)))


def mounts(spec: dict[str, Any]) -> list[Mount]:
    """mounts[] in order (order matters: later mounts may land inside earlier ones)."""
    return [Mount(m["destination"], m.get("type") or "", m.get("source") or "",
                  list(m.get("options") or [])) for m in spec.get("mounts") or []]


def namespaces(spec: dict[str, Any]) -> list[Namespace]:
    """linux.namespaces[]; a type absent from the list means: share the host's."""
    out = []
    for n in (spec.get("linux") or {}).get("namespaces") or []:
        if n["type"] not in NS_FLAGS:
            raise ValueError(f"unknown namespace type {n['type']!r}")
        out.append(Namespace(n["type"], n.get("path") or ""))
    return out


def id_mappings(spec: dict[str, Any], key: str) -> list[IdMapping]:
    """linux.uidMappings or linux.gidMappings."""
    return [IdMapping(int(m["containerID"]), int(m["hostID"]), int(m["size"]))
            for m in (spec.get("linux") or {}).get(key) or []]


def linux(spec: dict[str, Any]) -> dict[str, Any]:
    """The linux section, empty when absent."""
    return dict(spec.get("linux") or {})


def root(spec: dict[str, Any]) -> tuple[str, bool]:
    """root.path and root.readonly."""
    r = spec.get("root") or {}
    return str(r.get("path", "rootfs")), bool(r.get("readonly", False))


def default_mounts() -> list[dict[str, Any]]:
    """The mounts runc's `spec` command emits, plus /dev/shm sized like Docker's 64 MiB."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]


def default_spec(rootfs: str, args: list[str], *, hostname: str = "berth",
                 readonly: bool = False, terminal: bool = False,
                 namespaces: tuple[str, ...] = ("pid", "network", "ipc", "uts", "mount"),
                 seccomp: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config.json that runc and crun accept as-is, so benches compare like with like."""
    caps = list(DEFAULT_CAPS)
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps),
                             "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": readonly},
        "hostname": hostname,
        "mounts": default_mounts(),
        "linux": {
            "namespaces": [{"type": t} for t in namespaces],
            "maskedPaths": list(DEFAULT_MASKED),
            "readonlyPaths": list(DEFAULT_READONLY),
        },
    }
    if seccomp is not None:
        spec["linux"]["seccomp"] = seccomp
    return spec


def write_oom_score_adj(path: str, value: int) -> None:
    """Never below the current value: lowering needs CAP_SYS_RESOURCE, which we lack."""
    with open(path, "r+") as f:
        current = int(f.read().strip() or 0)
        f.seek(0)
        f.write(str(max(value, current)))


def apply_limits(proc: Process, *, oom: bool = True) -> None:
    """rlimits and oom_score_adj; the latter never below the current value (no SYS_RESOURCE)."""
    for rl in proc.rlimits:
        if rl.type not in RLIMITS:
            raise ProcessError(f"unknown rlimit {rl.type}")
        try:
            resource.setrlimit(RLIMITS[rl.type], (rl.soft, rl.hard))
        except (OSError, ValueError) as e:
            raise ProcessError(f"setrlimit {rl.type}: {e}") from None
    if oom and proc.oom_score_adj is not None:
        write_oom_score_adj("/proc/self/oom_score_adj", proc.oom_score_adj)
    os.umask(0o022 if proc.user.umask is None else proc.user.umask)


def lookup_executable(arg0: str, path_var: str) -> str:
    """PATH lookup inside the container (we are already pivoted), with a clear failure."""
    if "/" in arg0:
        if not os.path.exists(arg0):
            raise ProcessError(f"exec: {arg0}: no such file or directory")
        return arg0
    for d in path_var.split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ProcessError(f'exec: "{arg0}": executable file not found in $PATH')


def resolve_user(rootfs_path: str, user: str | int) -> tuple[int, int, list[int]]:
    """uid, gid and groups from the ROOTFS's /etc/passwd and /etc/group (never the host's).

    Files are opened with RESOLVE_IN_ROOT so a symlinked /etc/passwd cannot point at the host.
    Numeric users missing from passwd get gid 0, like other runtimes. Groups start with gid.
    """
    name, _, group = str(user).partition(":")
    rootfd = os.open(rootfs_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        passwd = _read_in_root(rootfd, "/etc/passwd")
        groups = _read_in_root(rootfd, "/etc/group")
    finally:
        os.close(rootfd)
    uid: int | None = int(name) if name.isdigit() else None
    gid = 0
    username = None if uid is not None else name
    for line in passwd:
        f = line.split(":")
        if len(f) < 4:
            continue
        if (uid is None and f[0] == name) or (uid is not None and f[2] == str(uid)):
            uid, gid, username = int(f[2]), int(f[3]), f[0]
            break
    if uid is None:
        raise UserNotFound(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        gid = group_id(groups, group)
    extra = [gid]
    for line in groups:
        f = line.split(":")
        if len(f) >= 4 and username and username in f[3].split(",") and int(f[2]) not in extra:
            extra.append(int(f[2]))
    return uid, gid, extra


def group_id(lines: list[str], group: str) -> int:
    """A group name or number as a gid, names looked up in /etc/group lines."""
    if group.isdigit():
        return int(group)
    for line in lines:
        f = line.split(":")
        if len(f) >= 3 and f[0] == group:
            return int(f[2])
    raise UserNotFound(f"unable to find group {group}: no matching entries in group file")


def read_group_file(rootfs_path: str) -> list[str]:
    """The ROOTFS's /etc/group lines (resolved inside the root, like resolve_user's reads)."""
    rootfd = os.open(rootfs_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _read_in_root(rootfd, "/etc/group")
    finally:
        os.close(rootfd)


def _read_in_root(rootfd: int, path: str) -> list[str]:
    try:
        fd = libc.openat2(rootfd, path, os.O_RDONLY)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return []
        raise
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        return [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]
