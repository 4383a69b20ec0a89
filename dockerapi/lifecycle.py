"""A Docker container is an engine pod of one container: create, start, stop and remove both.

Restart policies run here too: each exit the monitor reports is weighed against the policy,
with Docker's back-off (100 ms doubling, reset after 10 s of running).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import structlog

from dockerapi import health, model, mounts
from dockerapi import spec as specmod
from dockerapi.body import CreateBody
from dockerapi.model import Front
from engine import containers, endpoints, pods
from engine.errors import AlreadyExists, EngineError, FailedPrecondition, NotFound
from engine.ids import new_id
from engine.netspec import builtin_id
from engine.store import DOCKER, ContainerRecord, NameTaken, NetworkRecord, PodRecord
from runtime.containers import ContainerEvent
from runtime.hostdevices import host_devices
from runtime.images.records import Image
from runtime.network import podfiles

log = structlog.get_logger("dockerapi")
BACKOFF_START, BACKOFF_RESET = 0.1, 10.0
RESTART_ATTEMPTS = 6  # a just-exited container's cgroup can be busy for a moment
READER_GRACE = 10.0  # s an auto-remove waits for attached clients to read the last output


def _free_port(host_ip: str, proto: str) -> int:
    """dockerd's ephemeral host port for `-p 8080` / `-P`: whatever the kernel hands out."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.bind((host_ip or "0.0.0.0", 0))
        return int(s.getsockname()[1])


async def create(front: Front, body: CreateBody, image: Image, name: str,
                 image_doc: dict[str, Any]) -> ContainerRecord:
    """Pod, then container; a failure in either leaves neither."""
    ctx = front.ctx
    model.reserve_name(ctx, name)
    check = health.resolve(body.config.get("Healthcheck"), image_doc)
    planned = mounts.plan(ctx, body, image.config.volumes)
    cid = new_id()
    ports = [{"host_port": p.host_port or _free_port(p.host_ip, p.protocol),
              "container_port": p.container_port, "protocol": p.protocol, "host_ip": p.host_ip}
             for p in body.ports]
    body.hostname = body.hostname or cid[:12]
    pod = PodRecord(id=cid, name=cid, namespace=DOCKER, uid=cid, attempt=0,
                    state=pods.NOTREADY, created_ns=time.time_ns(), owner=DOCKER, ports=ports)
    spec = pods.PodSpec(hostname=body.hostname, host_network=body.network_mode == "host",
                        no_network=body.network_mode == "none",
                        dns=podfiles.DNSConfig() if body.network_mode != "host" else None)
    joined = _join(front, body, spec)
    if joined is not None:
        await ctx.networks.ready(joined)
    try:
        await pods.run_pod(ctx, pod, spec, f"container {name}")
    except NameTaken as exc:
        raise AlreadyExists(f"container {cid} is already reserved by {exc}") from None
    # the record names its volumes from the start: `volume rm` sees them in use at once
    volumes = mounts.volume_names(planned)
    rec = ContainerRecord(id=cid, pod_id=cid, name=name, attempt=0, image=body.image,
                          image_id=image.id, created_ns=time.time_ns(), labels=body.labels,
                          owner=DOCKER, extra={"volumes": volumes})
    docker = {"config": body.config, "host_config": body.host_config, "restart_count": 0,
              "ports": ports, "stop_timeout": body.stop_timeout, "auto_remove": body.auto_remove,
              "restart": body.restart, "restart_max": body.restart_max, "tty": body.tty,
              "open_stdin": body.open_stdin, "healthcheck": check,
              "mounts": mounts.stored(planned)}
    made: list[str] = []
    try:
        model.reserve_name(ctx, name)  # again: another create may have taken it meanwhile
        devices = await asyncio.to_thread(host_devices) if body.privileged else []
        made = mounts.create_volumes(ctx, planned)  # no await until the record is added
        await containers.create_container(
            ctx, rec, image, lambda rootfs: specmod.build(
                cid, body, image.config, pod.extra, rootfs, devices, mounts.oci(planned),
                ctx.config.cdi.spec_dirs),
            containers.Stdio(log_path=str(ctx.pod_dir(cid) / "container.log"), tty=body.tty,
                             stdin=body.open_stdin, stdin_once=body.stdin_once),
            body.stop_signal, name, extra={"docker": docker, "volumes": volumes},
            rerunnable=True, prepare=lambda rootfs: mounts.copy_up(ctx, planned, rootfs))
    except BaseException:
        await _drop_pod(front, pod)
        await mounts.drop_volumes(ctx, made)
        raise
    for vol in made:
        front.publish_volume(vol, "create")
    return rec


def _join(front: Front, body: CreateBody, spec: pods.PodSpec) -> NetworkRecord | None:
    """The container's network: the default bridge, or a user network with its embedded DNS
    as the only nameserver (dockerd's 127.0.0.11 with `ndots:0`). The user network's record,
    which must be made `ready` before the pod joins it."""
    if body.network_mode in ("host", "none"):
        return None
    if body.network_mode == "bridge":
        spec.networks = [endpoints.Join(network=builtin_id("bridge"))]
        return None
    nets = front.ctx.networks
    rec = nets.get(body.network_mode)
    if body.ip:
        nets.check_address(rec, body.ip, [a["ip"] for _, a in endpoints.members(
            front.ctx.store, rec.id)])
    spec.networks = [endpoints.Join(network=rec.id, conflist=nets.conflist(
        rec, bool(body.ports)), aliases=body.aliases, ip=body.ip)]
    spec.dns = podfiles.DNSConfig(servers=[rec.extra["gateway"]], options=["ndots:0"])
    return rec


async def _drop_pod(front: Front, pod: PodRecord) -> None:
    await pods.stop_pod(front.ctx, pod, lambda cid: containers.kill(front.ctx, cid))
    pods.forget_pod(front.ctx, pod)


def _mark_user_stopped(front: Front, rec: ContainerRecord, stopped: bool) -> None:
    """Persisted, so unless-stopped still knows after a berthd restart."""
    d = model.docker(rec)
    if bool(d.get("user_stopped")) != stopped:
        d["user_stopped"] = stopped
        rec.extra["docker"] = d
        front.ctx.store.containers.put(rec)


def _wants_restart(d: dict[str, Any], exit_code: int) -> bool:
    policy, count = d.get("restart", "no"), int(d.get("restart_count", 0))
    if policy == "always" or (policy == "unless-stopped" and not d.get("user_stopped")):
        return True
    return policy == "on-failure" and exit_code != 0 and (
        not d.get("restart_max") or count < int(d["restart_max"]))


async def resume(front: Front) -> None:
    """After a berthd restart: health checks for running containers, restarts for exited ones
    whose policy says so (the monitor kept the running ones running)."""
    states = await front.ctx.container_states()
    have = {c.pod_id for c in front.ctx.store.containers.owned(DOCKER)}
    for pod in front.ctx.store.pods.owned(DOCKER):
        if pod.id not in have:  # berthd died between the pod and its container: finish undo
            log.warning("removing a Docker pod whose container was never made", pod=pod.id)
            await _drop_pod(front, pod)
    for rec in front.ctx.store.containers.owned(DOCKER):
        st = states.get(rec.id)
        if st is not None and st.status == "running":
            health.start(front, rec)
        elif st is not None and st.status == "stopped" and not model.docker(rec).get(
                "user_stopped") and _wants_restart(model.docker(rec), st.exit_code):
            front.spawn(_restart_later(front, rec.id))


def running(front: Front, rec: ContainerRecord) -> bool:
    st = front.ctx.states.states.get(rec.id)
    return st is not None and st.status == "running"


async def start(front: Front, rec: ContainerRecord) -> bool:
    """False when it already runs (dockerd answers 304); an exited container runs again."""
    st = front.ctx.states.states.get(rec.id)
    if st is not None and st.status == "running":
        return False
    front.stopping.discard(rec.id)
    _mark_user_stopped(front, rec, False)
    front.started[rec.id] = time.monotonic()
    if st is None or st.status == "created":
        await containers.start(front.ctx, rec)
    else:
        await containers.rerun(front.ctx, rec)
    return True


async def stop(front: Front, rec: ContainerRecord, timeout: float | None,
               sig: int | None = None) -> bool:
    """False when it was not running (304). A stop is the user's: no restart follows it."""
    if not running(front, rec):
        return False
    front.stopping.add(rec.id)
    _mark_user_stopped(front, rec, True)
    await _thaw(front, rec)
    if timeout is None:
        timeout = model.docker(rec).get("stop_timeout")
        timeout = 10 if timeout is None else timeout
    await containers.stop(front.ctx, rec, max(0.0, float(timeout)), sig)
    return True


async def remove(front: Front, rec: ContainerRecord, force: bool,
                 volumes: bool = False) -> None:
    """`volumes` (`rm -v`, AutoRemove) takes the anonymous volumes no other container uses."""
    if running(front, rec) and not force:
        raise FailedPrecondition(f"You cannot remove a running container {rec.id}. Stop the "
                                 "container before attempting removal or force remove")
    front.stopping.add(rec.id)
    await _thaw(front, rec)
    await containers.remove(front.ctx, rec)
    pod = front.ctx.store.pods.get(rec.pod_id)
    if pod is not None:
        await _drop_pod(front, pod)
    front.forget(rec.id)
    if volumes:
        for vol in await mounts.drop_volumes(front.ctx, mounts.anonymous(rec)):
            front.publish_volume(vol, "destroy")


async def _thaw(front: Front, rec: ContainerRecord) -> None:
    """A frozen process cannot act on a signal, not even SIGKILL: dockerd thaws first too."""
    if rec.id in front.paused:
        with contextlib.suppress(FailedPrecondition):
            await containers.freeze(front.ctx, rec, False)
        front.paused.discard(rec.id)


async def wait(front: Front, rec: ContainerRecord, condition: str) -> int:
    """Block for Docker's wait conditions; the exit code of the exit that ended the wait."""
    ctx = front.ctx
    st = ctx.states.states.get(rec.id)
    if condition == "not-running" and (st is None or st.status != "running"):
        return st.exit_code if st is not None and st.status == "stopped" else 0
    fut = front.waiter(rec.id, "deleted" if condition == "removed" else "stopped")
    return await fut


def on_event(front: Front, ev: ContainerEvent) -> None:
    """Monitor events: wake waiters, publish Docker events, apply the restart policy."""
    ctx = front.ctx
    rec = ctx.store.containers.get(ev.state.id)
    front.resolve(ev.state.id, ev.kind, ev.state.exit_code)
    if rec is None or rec.owner != DOCKER:
        return
    if ev.kind == "started":
        health.start(front, rec)
    elif ev.kind in ("stopped", "deleted"):
        health.stop(front, rec.id)
    front.publish(rec, {"started": "start", "stopped": "die"}.get(ev.kind, ""),
                  {"exitCode": str(ev.state.exit_code)} if ev.kind == "stopped" else {})
    if ev.kind != "stopped" or rec.id in front.stopping:
        return
    d = model.docker(rec)
    if d.get("auto_remove"):
        front.spawn(_auto_remove(front, rec.id))
        return
    if _wants_restart(d, ev.state.exit_code):
        front.spawn(_restart_later(front, rec.id))


async def _auto_remove(front: Front, cid: str) -> None:
    """After every attach has copied the last output (the log goes with the container)."""
    readers = front.readers.get(cid)
    if readers:
        await asyncio.wait(set(readers), timeout=READER_GRACE)
    rec = front.ctx.store.containers.get(cid)
    if rec is not None:
        await remove(front, rec, force=True, volumes=True)
        front.publish(rec, "destroy", {})


async def _restart_later(front: Front, cid: str) -> None:
    """Docker's back-off: doubling from 100 ms, reset once a run lasted 10 s."""
    ran = time.monotonic() - front.started.get(cid, 0.0)
    delay = BACKOFF_START if ran >= BACKOFF_RESET else min(
        front.backoff.get(cid, BACKOFF_START / 2) * 2, 60.0)
    front.backoff[cid] = delay
    front.restarting.add(cid)
    try:
        await asyncio.sleep(delay)
        rec = front.ctx.store.containers.get(cid)
        if rec is None or cid in front.stopping:
            return
        d = model.docker(rec)
        d["restart_count"] = int(d.get("restart_count", 0)) + 1
        rec.extra["docker"] = d
        front.ctx.store.containers.put(rec)
        for attempt in range(RESTART_ATTEMPTS):
            try:
                await start(front, rec)
            except NotFound:
                return  # removed meanwhile
            except EngineError as exc:
                log.warning("restart failed; retrying", container=cid, error=str(exc))
                await asyncio.sleep(BACKOFF_START * 2 ** attempt)
                continue
            front.publish(rec, "restart", {})
            return
    finally:
        front.restarting.discard(cid)


def describe_ports(rec: ContainerRecord) -> dict[str, Any]:
    """NetworkSettings.Ports: every exposed port, with its host bindings or null."""
    d = model.docker(rec)
    out: dict[str, Any] = {p: None for p in (d.get("config", {}).get("ExposedPorts") or {})}
    for p in d.get("ports", []):
        key = f"{p['container_port']}/{p['protocol']}"
        out.setdefault(key, None)
        out[key] = (out[key] or []) + [{"HostIp": p["host_ip"] or "0.0.0.0",
                                        "HostPort": str(p["host_port"])}]
    return out
