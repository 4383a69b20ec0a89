"""Container inspect and list, in the JSON shapes the docker CLI and docker-py read."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dockerapi import lifecycle, model, mounts
from dockerapi.http import Route, front
from dockerapi.model import Front
from engine import endpoints
from engine.netspec import builtin_id
from engine.store import ContainerRecord
from runtime.monitor.state import ContainerState

ZERO_TIME = "0001-01-01T00:00:00Z"
# What dockerd reports for a HostConfig key the client did not send.
HOST_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {"Name": "no",
                                                                    "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None,
    "CapDrop": None, "CgroupnsMode": "private", "Dns": [], "DnsOptions": [], "DnsSearch": [],
    "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None,
    "OomScoreAdj": 0, "PidMode": "", "Privileged": False, "PublishAllPorts": False,
    "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "", "UsernsMode": "",
    "ShmSize": 67108864, "Runtime": "berth", "ConsoleSize": [0, 0], "Isolation": "",
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "CpuPeriod": 0, "CpuQuota": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": [],
    "MemoryReservation": 0, "MemorySwap": 0, "OomKillDisable": False, "PidsLimit": None,
    "Ulimits": None, "Mounts": None, "MaskedPaths": None, "ReadonlyPaths": None}


def iso(ns: int) -> str:
    if not ns:
        return ZERO_TIME
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def state(f: Front, rec: ContainerRecord) -> tuple[ContainerState | None, str]:
    st = f.ctx.states.states.get(rec.id)
    return st, model.status(st, rec.id in f.paused, rec.id in f.restarting)


def _argv(rec: ContainerRecord) -> list[str]:
    return list((rec.extra.get("process") or {}).get("args") or [])


def _endpoint(att: dict[str, Any], net_id: str, aliases: list[str] | None) -> dict[str, Any]:
    return {"IPAMConfig": None, "Links": None, "Aliases": aliases, "NetworkID": net_id,
            "EndpointID": att["endpoint"], "Gateway": att["gateway"], "IPAddress": att["ip"],
            "IPPrefixLen": att["prefixlen"], "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "MacAddress": att["mac"], "DriverOpts": None}


def _networks(f: Front, rec: ContainerRecord) -> tuple[str, dict[str, Any]]:
    """NetworkSettings.Networks from the pod's attachments (eth0 first)."""
    pod = f.ctx.store.pods.peek(rec.pod_id)
    atts = endpoints.attachments(pod) if pod else []
    out: dict[str, Any] = {}
    for att in atts:
        net = f.ctx.store.networks.peek(att["network"])
        if net is None:  # the default bridge
            out["bridge"] = _endpoint(att, att["network"], None)
        else:
            out[net.name] = _endpoint(att, net.id, [*att["aliases"], rec.id[:12]])
    if out:
        return atts[0]["ip"], out
    mode = model.docker(rec).get("host_config", {}).get("NetworkMode") or "bridge"
    return "", {mode: {"IPAMConfig": None, "Links": None, "Aliases": None,
                       "NetworkID": builtin_id(mode),
                       "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                       "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                       "MacAddress": "", "DriverOpts": None}}


def inspect(f: Front, rec: ContainerRecord) -> dict[str, Any]:
    d = model.docker(rec)
    st, status = state(f, rec)
    argv = _argv(rec)
    ip, networks = _networks(f, rec)
    cfg = dict(d.get("config") or {})
    image = f.ctx.images.get(rec.image_id)
    icfg = image.config if image else None
    if d.get("healthcheck"):
        cfg["Healthcheck"] = d["healthcheck"]
    cfg.update(Image=rec.image, Labels=rec.labels,
               Hostname=cfg.get("Hostname") or rec.id[:12],
               Env=[e for e in (rec.extra.get("process") or {}).get("env", [])],
               Cmd=cfg.get("Cmd") if cfg.get("Cmd") is not None else (icfg.cmd if icfg else []),
               Entrypoint=cfg.get("Entrypoint") if cfg.get("Entrypoint") is not None
               else (icfg.entrypoint or None if icfg else None),
               WorkingDir=cfg.get("WorkingDir") or (icfg.workdir if icfg else ""),
               User=cfg.get("User") or "", Tty=bool(cfg.get("Tty")),
               OpenStdin=bool(cfg.get("OpenStdin")), StdinOnce=bool(cfg.get("StdinOnce")),
               AttachStdin=bool(cfg.get("AttachStdin")),
               AttachStdout=bool(cfg.get("AttachStdout")),
               AttachStderr=bool(cfg.get("AttachStderr")))
    running = status in ("running", "paused")
    hc = {**HOST_DEFAULTS, **{k: v for k, v in (d.get("host_config") or {}).items()
                               if v is not None}}
    return {
        "Id": rec.id, "Created": iso(rec.created_ns), "Path": argv[0] if argv else "",
        "Args": argv[1:], "State": {
            "Status": status, "Running": running, "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": bool(st and st.reason == "OOMKilled"),
            "Dead": False, "Pid": st.pid if st and running else 0,
            "ExitCode": st.exit_code if st and st.status == "stopped" else 0,
            "Error": st.message if st and st.status == "stopped" and st.exit_code else "",
            "StartedAt": iso(st.started_ns if st else 0),
            "FinishedAt": iso(st.finished_ns if st else 0),
            **({"Health": f.health[rec.id].describe()} if rec.id in f.health else {})},
        "Image": rec.image_id, "ResolvConfPath": str(f.ctx.pod_dir(rec.pod_id) / "resolv.conf"),
        "HostnamePath": str(f.ctx.pod_dir(rec.pod_id) / "hostname"),
        "HostsPath": str(f.ctx.pod_dir(rec.pod_id) / "hosts"),
        "LogPath": rec.extra.get("log_path", ""), "Name": "/" + rec.name,
        "RestartCount": int(d.get("restart_count", 0)), "Driver": "overlay2",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": [e for e, x in f.execs.items()  # dockerd drops an exec here once it exits
                    if x.container_id == rec.id and not (x.started and not x.running)] or None,
        "HostConfig": hc, "GraphDriver": {"Name": "overlay2", "Data": None},
        "Mounts": mounts.describe(rec), "Config": cfg,
        "NetworkSettings": {
            "Bridge": "", "SandboxID": rec.pod_id, "HairpinMode": False,
            "Ports": lifecycle.describe_ports(rec), "SandboxKey": str(
                f.ctx.ns_dir(rec.pod_id) / "network"),
            "IPAddress": ip, "IPPrefixLen": next(iter(networks.values()))["IPPrefixLen"],
            "Gateway": next(iter(networks.values()))["Gateway"],
            "MacAddress": next(iter(networks.values()))["MacAddress"],
            "Networks": networks},
    }


def summary(f: Front, rec: ContainerRecord) -> dict[str, Any]:
    """One row of GET /containers/json (and of system/df's Containers)."""
    st, status = state(f, rec)
    return {**row_head(rec), "State": status, "Status": row_status(f, rec, st, status),
            **row_tail(f, rec)}


def row_head(rec: ContainerRecord) -> dict[str, Any]:
    """A list row's keys before State: they read the container's record alone."""
    ports = [{"IP": p["host_ip"] or "0.0.0.0", "PrivatePort": p["container_port"],
              "PublicPort": p["host_port"], "Type": p["protocol"]}
             for p in model.docker(rec).get("ports", [])]
    return {"Id": rec.id, "Names": ["/" + rec.name], "Image": rec.image,
            "ImageID": rec.image_id, "Command": " ".join(_argv(rec)),
            "Created": rec.created_ns // 1_000_000_000, "Ports": ports, "Labels": rec.labels}


def row_status(f: Front, rec: ContainerRecord, st: ContainerState | None, status: str) -> str:
    """A list row's Status line; it and State are the keys that change without a write."""
    health = f" ({f.health[rec.id].status})" if status == "running" and rec.id in f.health \
        else ""
    return _status_line(st, status) + health


def row_tail(f: Front, rec: ContainerRecord) -> dict[str, Any]:
    """A list row's keys after Status: the record, its pod's attachments, the networks."""
    networks = _networks(f, rec)[1]
    mode = model.docker(rec).get("host_config", {}).get("NetworkMode") or "default"
    return {"HostConfig": {"NetworkMode": mode},  # as created, as dockerd lists it
            "NetworkSettings": {"Networks": networks}, "Mounts": mounts.describe(rec)}


def _ago(ns: int) -> str:
    secs = max(0, time.time_ns() - ns) // 1_000_000_000
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if secs >= size:
            return f"{secs // size} {unit}"
    return "Less than a second" if secs < 1 else f"{secs} seconds"


def _status_line(st: ContainerState | None, status: str) -> str:
    if st is None or status == "created":
        return "Created"
    if status in ("running", "paused"):
        return f"Up {_ago(st.started_ns)}" + (" (Paused)" if status == "paused" else "")
    return f"Exited ({st.exit_code}) {_ago(st.finished_ns)} ago"


async def get(request: web.Request) -> web.StreamResponse:
    f = front(request)
    return web.json_response(inspect(f, model.container(f.ctx, request.match_info["id"])))


ROUTES: list[Route] = [("GET", "/containers/{id}/json", get)]
