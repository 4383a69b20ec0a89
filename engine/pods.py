"""Pod lifecycle: pinned namespaces, a CNI network and the pod's files, up and down.

A pod is what CRI calls a sandbox and what a Docker container runs in alone. Front ends
translate their request into a `PodSpec` and a `PodRecord` (whose owner keeps them apart).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import endpoints, failpoints
from engine.context import Context
from engine.errors import EngineError, Internal
from engine.rollback import Rollback
from engine.store import PodRecord
from runtime import podns, podpid
from runtime.network import podfiles

READY = "SANDBOX_READY"
NOTREADY = "SANDBOX_NOTREADY"


@dataclass
class PodSpec:
    """What a pod needs from the kernel, in no front end's vocabulary."""

    hostname: str
    host_network: bool = False
    host_ipc: bool = False
    pod_pid: bool = False  # one pid namespace for the pod, with a tiny init as pid 1
    no_network: bool = False  # own network namespace with loopback only (docker --network none)
    sysctls: dict[str, str] = field(default_factory=dict)
    dns: podfiles.DNSConfig | None = None
    log_directory: str = ""
    cgroup_parent: str = ""
    runtime_handler: str = ""
    # the networks to join, eth0 first; empty: the default CNI network (CRI, docker bridge)
    networks: list[endpoints.Join] = field(default_factory=list)


async def run_pod(ctx: Context, rec: PodRecord, spec: PodSpec, what: str) -> PodRecord:
    """Reserve the record (NameTaken propagates), bring the pod up, or leave nothing behind.

    `what` names the pod in an unexpected failure's message.
    """
    ctx.store.pods.add(rec)
    undo = Rollback()
    undo.push("forget pod", lambda: ctx.store.pods.delete(rec.id))
    try:
        rec.extra = await bring_up(ctx, rec, spec, undo)
        rec.state = READY
        ctx.store.pods.put(rec)
    except BaseException as exc:
        await undo.run()
        if isinstance(exc, EngineError) or not isinstance(exc, Exception):
            raise
        raise Internal(f"{what}: {exc}") from exc
    return rec


async def bring_up(ctx: Context, rec: PodRecord, spec: PodSpec,
                   undo: Rollback) -> dict[str, Any]:
    """Each step registers its undo before the next starts."""
    pod_id = rec.id
    host_net = spec.host_network
    pod_dir = ctx.pod_dir(pod_id)
    pod_dir.mkdir(parents=True)
    undo.push("pod dir", lambda: shutil.rmtree(pod_dir, ignore_errors=True))
    if spec.log_directory:
        Path(spec.log_directory).mkdir(parents=True, exist_ok=True)
    kinds = [k for k, host in (("network", host_net), ("uts", host_net),
                               ("ipc", spec.host_ipc)) if not host]
    pins = ctx.ns_dir(pod_id)
    undo.push("namespaces", lambda: podns.unpin(pins))
    ns_paths = await podns.pin(pins, kinds, hostname=spec.hostname, sysctls=spec.sysctls)
    if spec.pod_pid:
        undo.push("pod init", lambda: podpid.stop(pins))
        ns_paths["pid"] = await podpid.start(pins)
    failpoints.hit("sandbox.after_namespaces")
    ips: list[str] = []
    atts: list[dict[str, Any]] = []
    if not host_net and not spec.no_network:
        netns = ns_paths["network"]
        for n, join in enumerate(spec.networks or [endpoints.Join(network="")]):
            ifname = f"eth{n}"
            undo.push(f"network {ifname}", functools.partial(endpoints.detach, ctx, rec, netns,
                                                             ifname))
            att, got = await endpoints.attach(ctx, rec, netns, join, ifname)
            atts.append(att)
            ips += [str(ip) for ip in got]
        failpoints.hit("sandbox.after_network")
    paths = podfiles.write_pod_files(str(pod_dir), spec.hostname, ips, spec.dns,
                                     host_network=host_net)
    files = {f"/etc/{name}": path for name, path in paths.items()}
    return {"ns": ns_paths, "ips": ips, "networks": atts, "host_network": host_net,
            "files": files,
            "no_network": spec.no_network, "cgroup_parent": spec.cgroup_parent,
            "runtime_handler": spec.runtime_handler}


async def stop_pod(ctx: Context, rec: PodRecord,
                   kill: Callable[[str], Awaitable[None]]) -> bool:
    """Kill every container, then tear the network down; repeating it is harmless.

    Returns whether the pod just changed to not ready (the front end announces that).
    """
    for c in ctx.store.containers.find(pod_id=rec.id):
        await kill(c.id)
    failpoints.hit("stop_pod.after_containers")
    if not rec.extra.get("host_network") and not rec.extra.get("no_network") \
            and rec.extra.get("ns"):
        await release_network(ctx, rec, rec.extra["ns"]["network"])
    podpid.stop(ctx.ns_dir(rec.id))
    podns.unpin(ctx.ns_dir(rec.id))
    if rec.state == NOTREADY:
        return False
    rec.state = NOTREADY
    ctx.store.pods.put(rec)
    return True


async def release_network(ctx: Context, rec: PodRecord, netns: str) -> None:
    """CNI DEL of every interface the pod has; all are tried, the first failure is raised."""
    errors: list[Exception] = []
    for ifname in endpoints.ifnames(rec):
        try:
            await endpoints.detach(ctx, rec, netns, ifname)
        except Exception as exc:  # noqa: BLE001 - every interface gets its DEL first
            errors.append(exc)
    if errors:
        raise errors[0]


def forget_pod(ctx: Context, rec: PodRecord) -> None:
    """The last step of removing a stopped pod whose containers are gone: files and record."""
    failpoints.hit("remove_pod.after_containers")
    shutil.rmtree(ctx.pod_dir(rec.id), ignore_errors=True)
    ctx.store.pods.delete(rec.id)
