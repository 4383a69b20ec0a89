"""CRI ContainerConfig + image config → OCI runtime spec: process, mounts and namespaces."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from cri.errors import FailedPrecondition, InvalidArgument, NotFound
from cri.ocisecurity import apply_security
from proto import api_pb2
from runtime import cdi, propagation
from runtime import spec as spec_defaults
from runtime.idmap import Mapping, host_of
from runtime.images.records import ImageConfig
from runtime.spec import DEFAULT_DEVICES

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROPAGATION = {
    api_pb2.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass
class PodContext:
    """What a container inherits from its pod: pinned namespaces, files and cgroup parent."""

    id: str
    ns_paths: dict[str, str]  # "network"/"ipc"/"uts"/"pid" → pinned path; absent = host/own
    files: dict[str, str]  # "/etc/hosts" etc. → host file
    cgroup_parent: str
    host_pid: bool = False
    pod_pid: bool = False
    hostname: str = ""  # the pod's (the node's for a host-network pod): HOSTNAME in the env


def process_args(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> list[str]:
    """Docker's rules: CRI command replaces the entrypoint, CRI args replace the cmd."""
    command, args = list(cfg.command), list(cfg.args)
    if not command:
        if not args:
            args = list(image.cmd)
        if image.entrypoint != [""]:
            command = list(image.entrypoint)
    argv = command + args
    if not argv:
        raise InvalidArgument("no command specified: the image has no entrypoint or cmd "
                              "and the container config gives none")
    return argv


def merge_env(image_env: list[str], cri_env: list[api_pb2.KeyValue],
              hostname: str = "") -> list[str]:
    """HOSTNAME (the pod's) first, then the image env, then the CRI env, each overriding by
    key, as containerd and Docker layer them; PATH defaults like containerd's."""
    env: dict[str, str] = {"HOSTNAME": hostname} if hostname else {}
    for item in image_env:
        key, _, value = item.partition("=")
        env[key] = value
    for kv in cri_env:
        if not kv.key:
            raise InvalidArgument("envs: an environment variable has an empty key")
        env[kv.key] = kv.value
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    return [f"{k}={v}" for k, v in env.items()]


def default_mounts(pod: PodContext, readonly_rootfs: bool) -> list[dict[str, Any]]:
    """runc's default kernel filesystems, the container's cgroups read-only, the pod's files."""
    mounts = spec_defaults.default_mounts()
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    for dest, src in sorted(pod.files.items()):
        opts = ["rbind", "rprivate"] + (["ro"] if readonly_rootfs else [])
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": opts})
    return mounts


def cri_mounts(cfg: api_pb2.ContainerConfig) -> list[dict[str, Any]]:
    """Volume mounts: host paths must be absolute and exist (kubelet creates hostPath dirs)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in cfg.mounts:
        if not m.container_path or not os.path.isabs(m.container_path):
            raise InvalidArgument(f"mount container_path '{m.container_path}' must be absolute")
        if m.image.image:
            raise InvalidArgument(f"mount {m.container_path}: image volumes are not supported")
        if not m.host_path or not os.path.isabs(m.host_path):
            raise InvalidArgument(f"mount {m.container_path}: host_path '{m.host_path}' "
                                  "must be an absolute path")
        if not os.path.exists(m.host_path):
            raise NotFound(f"mount {m.container_path}: host path {m.host_path} does not exist")
        dest = os.path.normpath(m.container_path)
        if dest in seen:
            raise InvalidArgument(f"mount {dest} is given twice")
        seen.add(dest)
        prop = PROPAGATION.get(m.propagation, "rprivate")
        try:
            propagation.check_source(m.host_path, prop)
        except propagation.PropagationError as exc:
            raise FailedPrecondition(f"mount {dest}: {exc}") from None
        opts = ["rbind", prop]
        if m.readonly:
            opts.append("ro")
        out.append({"destination": dest, "type": "bind", "source": m.host_path,
                    "options": opts})
    return out


def user_namespace(cfg: api_pb2.ContainerConfig) -> tuple[list[Mapping], list[Mapping]] | None:
    """CRI userns_options (hostUsers: false) → uid and gid maps; None keeps the host's users.

    Root inside must map to an unprivileged host range: no range may cover host id 0.
    """
    opts = cfg.linux.security_context.namespace_options
    if not opts.HasField("userns_options") or \
            opts.userns_options.mode == api_pb2.NamespaceMode.NODE:
        return None
    u = opts.userns_options
    if u.mode != api_pb2.NamespaceMode.POD:
        raise InvalidArgument(f"userns_options mode {api_pb2.NamespaceMode.Name(u.mode)} is not "
                              "supported; kubelet sends POD (hostUsers: false) or NODE")
    maps = ([Mapping(m.container_id, m.host_id, m.length) for m in u.uids],
            [Mapping(m.container_id, m.host_id, m.length) for m in u.gids])
    for kind, ranges in zip(("uids", "gids"), maps, strict=True):
        if not ranges:
            raise InvalidArgument(f"userns_options: a user namespace needs {kind} mappings")
        for m in ranges:
            if m.size == 0:
                raise InvalidArgument(f"userns_options {kind}: a mapping of length 0")
            if m.host <= 0 < m.host + m.size:
                raise InvalidArgument(f"userns_options {kind}: host range {m.host}+{m.size} "
                                      "includes host id 0; root must map to an unprivileged "
                                      "host range")
        try:
            host_of(ranges, 0)
        except ValueError:
            raise InvalidArgument(f"userns_options {kind}: container id 0 is not mapped") from None
    sec = cfg.linux.security_context
    if sec.privileged:
        raise InvalidArgument("a privileged container cannot run in a user namespace")
    if any(m.propagation != api_pb2.MountPropagation.PROPAGATION_PRIVATE for m in cfg.mounts):
        raise InvalidArgument("mount propagation cannot be combined with a user namespace: "
                              "its volumes are private idmapped clones")
    return maps


def namespaces(pod: PodContext, cfg: api_pb2.ContainerConfig) -> list[dict[str, str]]:
    """Join the pod's pinned namespaces; own mount and pid (unless the pod shares pid)."""
    ns: list[dict[str, str]] = [{"type": "mount"}]
    for kind in ("network", "ipc", "uts"):
        if kind in pod.ns_paths:
            ns.append({"type": kind, "path": pod.ns_paths[kind]})
    pid_mode = cfg.linux.security_context.namespace_options.pid
    if pid_mode == api_pb2.NamespaceMode.POD and "pid" in pod.ns_paths:
        ns.append({"type": "pid", "path": pod.ns_paths["pid"]})
    elif pid_mode != api_pb2.NamespaceMode.NODE:
        ns.append({"type": "pid"})
    ns.append({"type": "cgroup"})
    return ns


def build_spec(*, container_id: str, cfg: api_pb2.ContainerConfig, image: ImageConfig,
               pod: PodContext, user: tuple[int, int, list[int]], tty: bool,
               cdi_dirs: list[str] | None = None) -> dict[str, Any]:
    """A complete config.json for runtime/init; everything kubelet asked for lands here."""
    sec = cfg.linux.security_context
    uid, gid, groups = user
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": process_args(cfg, image),
            "env": merge_env(image.env, list(cfg.envs), pod.hostname),
            "cwd": cfg.working_dir or image.workdir or "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": False,
            "oomScoreAdj": cfg.linux.resources.oom_score_adj,
        },
        "root": {"path": "rootfs", "readonly": sec.readonly_rootfs},
        "hostname": "",
        "mounts": default_mounts(pod, sec.readonly_rootfs) + cri_mounts(cfg),
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": cfg.metadata.name,
            "io.kubernetes.cri.sandbox-id": pod.id,
            **dict(cfg.annotations),
        },
        "linux": {
            "namespaces": namespaces(pod, cfg),
            "cgroupsPath": f"{pod.cgroup_parent.strip('/')}/{container_id}".lstrip("/"),
            "resources": resources(cfg.linux.resources),
            "devices": [],
            "sysctl": {},
        },
    }
    if not os.path.isabs(spec["process"]["cwd"]):
        raise InvalidArgument(f"working_dir '{spec['process']['cwd']}' must be absolute")
    userns = user_namespace(cfg)
    if userns is not None:
        if not any(n["type"] == "pid" and "path" not in n for n in spec["linux"]["namespaces"]):
            raise InvalidArgument("a user-namespaced container needs its own pid namespace: "
                                  "shareProcessNamespace and hostPID need hostUsers: true")
        spec["linux"]["namespaces"].append({"type": "user"})
        volumes = {os.path.normpath(m.container_path) for m in cfg.mounts}
        for m in spec["mounts"]:
            if m["destination"] in volumes:
                m["options"].append("ridmap")  # files keep their owners inside
        for key, maps in zip(("uidMappings", "gidMappings"), userns, strict=True):
            spec["linux"][key] = [{"containerID": m.container, "hostID": m.host, "size": m.size}
                                  for m in maps]
    if any("rshared" in m["options"] for m in spec["mounts"]):
        # runc's rule: a Bidirectional volume needs "/" to stay in the host's peer groups
        spec["linux"]["rootfsPropagation"] = "rshared"
    devices(cfg, spec)
    cdi_devices(cfg, spec, cdi_dirs)
    apply_security(spec, sec, cfg)
    return spec


def cdi_devices(cfg: api_pb2.ContainerConfig, spec: dict[str, Any],
                dirs: list[str] | None) -> None:
    """CDI devices named by CDI_devices and by `cdi.k8s.io/*` annotations (runtime/cdi.py)."""
    names = [d.name for d in cfg.CDI_devices] + cdi.annotation_devices(dict(cfg.annotations))
    try:
        cdi.inject(spec, names, dirs)
    except cdi.CdiError as exc:
        raise InvalidArgument(str(exc)) from None


_CPUSET = re.compile(r"(\d+(-\d+)?(,\d+(-\d+)?)*)?")


def resources(r: api_pb2.LinuxContainerResources) -> dict[str, Any]:
    """CRI resources in OCI form; negative values are refused rather than guessed at."""
    for name in ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes",
                 "memory_swap_limit_in_bytes"):
        value = getattr(r, name)
        if value < 0 and not (name == "cpu_quota" and value == -1):
            raise InvalidArgument(f"resources.{name} must not be negative, got {value}")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument(f"resources.oom_score_adj {r.oom_score_adj} is outside -1000..1000")
    # the kernel answers EINVAL outside these; say which field instead
    if r.cpu_period and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidArgument(f"resources.cpu_period {r.cpu_period} is outside 1000..1000000 µs")
    if 0 < r.cpu_quota < 1000:
        raise InvalidArgument(f"resources.cpu_quota {r.cpu_quota} is below the 1000 µs minimum")
    for name in ("cpuset_cpus", "cpuset_mems"):
        if not _CPUSET.fullmatch(getattr(r, name)):
            raise InvalidArgument(f"resources.{name} '{getattr(r, name)[:100]}' is not a list "
                                  "like 0-2,4")
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}, *DEFAULT_DEVICES]}
    cpu = {k: v for k, v in (("shares", r.cpu_shares), ("quota", r.cpu_quota),
                             ("period", r.cpu_period), ("cpus", r.cpuset_cpus),
                             ("mems", r.cpuset_mems)) if v}
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes:
        out["memory"] = {"limit": r.memory_limit_in_bytes}
        if r.memory_swap_limit_in_bytes:
            out["memory"]["swap"] = r.memory_swap_limit_in_bytes
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                 for h in r.hugepage_limits]
    if r.unified:
        out["unified"] = dict(r.unified)
    return out


def devices(cfg: api_pb2.ContainerConfig, spec: dict[str, Any]) -> None:
    """Host devices by path: the node must have them, and the cgroup must allow them."""
    for d in cfg.devices:
        if not os.path.isabs(d.host_path) or not os.path.isabs(d.container_path):
            raise InvalidArgument(f"device {d.host_path} → {d.container_path}: "
                                  "paths must be absolute")
        perms = d.permissions or "rwm"
        if set(perms) - set("rwm"):
            raise InvalidArgument(f"device {d.host_path}: permissions '{perms}' not in rwm")
        try:
            st = os.stat(d.host_path)
        except FileNotFoundError:
            raise NotFound(f"device {d.host_path} does not exist on this node") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise InvalidArgument(f"device {d.host_path} is not a device node")
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        spec["linux"]["devices"].append({
            "path": d.container_path, "type": kind, "major": major, "minor": minor,
            "fileMode": st.st_mode & 0o777, "uid": 0, "gid": 0})
        spec["linux"]["resources"]["devices"].append(
            {"allow": True, "type": kind, "major": major, "minor": minor, "access": perms})
