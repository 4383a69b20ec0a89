"""A Docker create body and its image's config → the OCI spec the engine runs."""

from __future__ import annotations

import functools
import resource
from pathlib import Path
from typing import Any

from dockerapi.body import CreateBody
from engine.errors import InvalidArgument
from runtime import caps as capsmod
from runtime import cdi, seccomp
from runtime import spec as defaults
from runtime.images.records import ImageConfig
from runtime.init import InitError
from runtime.procuser import process_user

CPU_PERIOD = 100_000  # µs; NanoCpus become a quota over this period, as dockerd does


def argv(body: CreateBody, image: ImageConfig) -> list[str]:
    """Docker's rule: Entrypoint given replaces the image's and drops its Cmd."""
    if body.entrypoint is not None:
        entry = [] if body.entrypoint == [""] else body.entrypoint
        cmd = body.cmd or []
    else:
        entry, cmd = list(image.entrypoint), body.cmd if body.cmd is not None else list(image.cmd)
    args = entry + cmd
    if not args:
        raise InvalidArgument("No command specified")
    return args


def env(body: CreateBody, image: ImageConfig) -> list[str]:
    merged: dict[str, str] = {}
    for item in [*image.env, *body.env]:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.setdefault("PATH", defaults.DEFAULT_PATH)
    if body.tty:
        merged.setdefault("TERM", "xterm")
    merged.setdefault("HOSTNAME", body.hostname)
    return [f"{k}={v}" for k, v in merged.items()]


@functools.cache
def _nofile() -> int:
    """dockerd hands containers its own open-file limit (1048576 under systemd); so do we."""
    return min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)


def capabilities(body: CreateBody) -> list[str]:
    """dockerd's order: the default set (all when privileged), drop, then add; ALL counts."""
    try:
        return capsmod.container_set(body.privileged, body.cap_drop, body.cap_add)
    except capsmod.UnknownCapability as exc:
        raise InvalidArgument(f"unknown capability: \"{exc.name[:50]}\"") from None


def resources(body: CreateBody) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"},
                                       *defaults.DEFAULT_DEVICES]}
    if body.memory:
        out["memory"] = {"limit": body.memory}
    cpu: dict[str, int] = {}
    if body.nano_cpus:
        cpu.update(period=CPU_PERIOD, quota=body.nano_cpus * CPU_PERIOD // 1_000_000_000)
    if body.cpu_shares:
        cpu["shares"] = body.cpu_shares
    if cpu:
        out["cpu"] = cpu
    if body.pids_limit:
        out["pids"] = {"limit": body.pids_limit}
    if body.privileged:
        out["devices"] = [{"allow": True, "access": "rwm"}]
    return out


def build(cid: str, body: CreateBody, image: ImageConfig, pod_extra: dict[str, Any],
          rootfs: Path, devices: list[dict[str, Any]],
          volumes: list[dict[str, Any]], cdi_dirs: list[str]) -> dict[str, Any]:
    """A complete config.json: the pod's namespaces and files, the body's process and limits;
    devices are the host's nodes a privileged container gets (runtime.hostdevices), volumes
    the binds and volumes as OCI mounts (dockerapi.mounts), then the CDI devices' edits from
    the specs in cdi_dirs (runtime/cdi.py, as CRI's CDI_devices)."""
    user = body.user or image.user or "0"
    try:  # CRI's rule, but as dockerd: an explicit group drops the image's memberships
        uid, gid, groups = process_user(str(rootfs), user, body.group_add,
                                        image_groups=":" not in user).as_tuple()
    except (InitError, LookupError, ValueError) as exc:
        raise InvalidArgument(f"unable to find user {body.user or image.user}: {exc}") from None
    caps = capabilities(body)
    mounts = defaults.default_mounts()
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    for dest, src in sorted(pod_extra.get("files", {}).items()):
        mounts.append({"destination": dest, "type": "bind", "source": src,
                       "options": ["rbind", "rprivate"]})
    mounts += volumes
    ns: list[dict[str, str]] = [{"type": "mount"}]
    for kind, path in sorted(pod_extra.get("ns", {}).items()):
        if kind in ("network", "ipc", "uts"):
            ns.append({"type": kind, "path": path})
    ns += [{"type": "pid"}, {"type": "cgroup"}]
    spec: dict[str, Any] = {
        "ociVersion": defaults.OCI_VERSION,
        "process": {
            "terminal": body.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": argv(body, image),
            "env": env(body, image),
            "cwd": body.workdir or image.workdir or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                             "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": body.readonly_rootfs},
        "hostname": "",
        "mounts": mounts,
        "annotations": {"org.berth.docker.name": body.hostname},
        "linux": {
            "namespaces": ns,
            "cgroupsPath": f"berth/{cid}",
            "resources": resources(body),
            "devices": devices,
            "sysctl": {},
            "maskedPaths": [] if body.privileged else list(defaults.DEFAULT_MASKED),
            "readonlyPaths": [] if body.privileged else list(defaults.DEFAULT_READONLY),
        },
    }
    if not body.privileged:
        spec["linux"]["seccomp"] = seccomp.default_profile(caps)
    try:
        cdi.inject(spec, body.cdi_devices, cdi_dirs)
    except cdi.CdiError as exc:
        raise InvalidArgument(str(exc)) from None
    return spec
