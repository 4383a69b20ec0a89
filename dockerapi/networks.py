"""Network endpoints: create, list (filters), inspect, connect, disconnect, remove, prune.

`bridge`, `host` and `none` are always listed; user networks are `engine.networks` records.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from aiohttp import web

from dockerapi import body as bodymod
from dockerapi import model
from dockerapi.http import Route, body, filters, front
from dockerapi.model import Front
from engine import endpoints
from engine.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from engine.netspec import BRIDGE_OPT, BUILTIN, NetworkSpec, builtin_id
from engine.store import ContainerRecord, NetworkRecord, PodRecord

FILTERS = ("name", "id", "label", "driver", "type", "dangling", "scope")
DRIVER_OF = {"bridge": "bridge", "host": "host", "none": "null"}


def _created(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + \
        f".{ns % 1_000_000_000:09d}Z"


def _containers(f: Front, net_id: str) -> dict[str, Any]:
    out = {}
    for c, att in endpoints.members(f.ctx.store, net_id):
        out[c.id] = {"Name": c.name, "EndpointID": att["endpoint"], "MacAddress": att["mac"],
                     "IPv4Address": f"{att['ip']}/{att['prefixlen']}" if att["ip"] else "",
                     "IPv6Address": ""}
    return out


def _builtin(f: Front, name: str, detail: bool) -> dict[str, Any]:
    nets = f.ctx.networks
    config: list[dict[str, str]] = []
    options: dict[str, str] = {}
    if name == "bridge":
        subnet = nets.default_subnet()
        if subnet is not None:
            config = [{"Subnet": str(subnet), "Gateway": str(subnet.network_address + 1)}]
        options = {"com.docker.network.bridge.default_bridge": "true",
                   BRIDGE_OPT: nets.default_bridge()}
    net_id = builtin_id(name)
    return {"Name": name, "Id": net_id, "Created": _created(int(f.ctx.started_at * 1e9)),
            "Scope": "local", "Driver": DRIVER_OF[name], "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": False, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": _containers(f, net_id) if detail else {},
            "Options": options, "Labels": {}}


def view(f: Front, rec: NetworkRecord, detail: bool = True) -> dict[str, Any]:
    """A network as `docker network inspect` prints it (list replies leave Containers empty)."""
    x = rec.extra
    cfg = {"Subnet": x["subnet"], "Gateway": x["gateway"]}
    if x.get("ip_range"):
        cfg["IPRange"] = x["ip_range"]
    return {"Name": rec.name, "Id": rec.id, "Created": _created(rec.created_ns),
            "Scope": "local", "Driver": rec.driver, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [cfg]},
            "Internal": bool(x.get("internal")), "Attachable": bool(x.get("attachable")),
            "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": _containers(f, rec.id) if detail else {},
            "Options": x.get("options") or {}, "Labels": rec.labels or {}}


def _strmap(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{what} must be a JSON object of strings")
    return value


def parse_create(doc: Any) -> NetworkSpec:
    """The create body; every field that could only fail later is checked now."""
    if not isinstance(doc, dict):
        raise InvalidArgument("the network config must be a JSON object")
    name, driver = doc.get("Name"), doc.get("Driver") or "bridge"
    if not isinstance(name, str) or not name:
        raise InvalidArgument("network name is required")
    if not isinstance(driver, str):
        raise InvalidArgument("Driver must be a string")
    if doc.get("EnableIPv6"):
        raise InvalidArgument("IPv6 networks are not supported by Berth yet")
    if doc.get("Ingress") or doc.get("ConfigOnly") or (doc.get("ConfigFrom") or {}).get(
            "Network"):
        raise InvalidArgument("swarm networks (ingress, config-only, config-from) are not "
                              "supported")
    spec = NetworkSpec(name=name, driver=driver, internal=bool(doc.get("Internal")),
                       attachable=bool(doc.get("Attachable")),
                       labels=_strmap(doc.get("Labels"), "Labels"),
                       options=_strmap(doc.get("Options"), "Options"))
    ipam = doc.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise InvalidArgument("IPAM must be a JSON object")
    if (ipam.get("Driver") or "default") != "default":
        raise NotFound(f"plugin \"{str(ipam['Driver'])[:100]}\" not found")
    configs = ipam.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise InvalidArgument("IPAM.Config must be a list of objects")
    if len(configs) > 1:
        raise InvalidArgument("Berth networks take one IPv4 IPAM config")
    for cfg in configs:
        for key, attr in (("Subnet", "subnet"), ("Gateway", "gateway"), ("IPRange", "ip_range")):
            value = cfg.get(key) or ""
            if not isinstance(value, str):
                raise InvalidArgument(f"IPAM.Config.{key} must be a string")
            if value and key != "Gateway":
                _cidr(value)
            setattr(spec, attr, value)
        if cfg.get("AuxiliaryAddresses"):
            raise InvalidArgument("IPAM auxiliary addresses are not supported")
    return spec


def _cidr(text: str) -> None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text[:100]}") from None
    if net.version != 4:
        raise InvalidArgument(f"IPv6 subnets are not supported by Berth yet: {text[:100]}")


async def create(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = await f.ctx.networks.create(parse_create(await body(request, {})))
    f.publish_network(rec.id, rec.name, "create")
    return web.json_response({"Id": rec.id, "Warning": ""}, status=201)


def _all(f: Front) -> list[dict[str, Any]]:
    return [_builtin(f, n, False) for n in BUILTIN] + [view(f, r, False)
                                                       for r in f.ctx.networks.all()]


def _label_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        key, eq, value = w.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _keep(f: Front, net: dict[str, Any], flt: dict[str, list[str]]) -> bool:
    builtin = net["Name"] in BUILTIN and net["Id"] == builtin_id(net["Name"])
    checks = {
        "name": lambda v: v in net["Name"],
        "id": lambda v: net["Id"].startswith(v),
        "driver": lambda v: v == net["Driver"],
        "scope": lambda v: v == "local",
        "type": lambda v: v == ("builtin" if builtin else "custom"),
    }
    for key, values in flt.items():
        if key == "label":
            if not _label_match(net["Labels"], values):
                return False
        elif key == "dangling":
            want = values[0].lower() in ("1", "true")
            if want != (not builtin and not endpoints.members(f.ctx.store, net["Id"])):
                return False
        elif key == "type" and any(v not in ("builtin", "custom") for v in values):
            raise InvalidArgument(f"invalid filter: 'type'='{values[0][:50]}'")
        elif not any(checks[key](v) for v in values):
            return False
    return True


async def list_(request: web.Request) -> web.StreamResponse:
    f = front(request)
    flt = filters(request, FILTERS)
    return web.json_response([n for n in _all(f) if _keep(f, n, flt)])


def _find(f: Front, ref: str) -> tuple[str, NetworkRecord | None]:
    """A built-in network's name (with None), or a user network's record."""
    for name in BUILTIN:
        if ref in (name, builtin_id(name)):
            return name, None
    rec = f.ctx.networks.get(ref)
    return rec.name, rec


async def inspect(request: web.Request) -> web.StreamResponse:
    f = front(request)
    name, rec = _find(f, request.match_info["id"])
    return web.json_response(_builtin(f, name, True) if rec is None else view(f, rec))


async def remove(request: web.Request) -> web.StreamResponse:
    f = front(request)
    name, rec = _find(f, request.match_info["id"])
    if rec is None:
        raise PermissionDenied(f"{name} is a pre-defined network and cannot be removed")
    users = [c.name for c, _ in endpoints.members(f.ctx.store, rec.id)]
    await f.ctx.networks.remove(rec, users)
    f.publish_network(rec.id, rec.name, "destroy")
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    f = front(request)
    flt = filters(request, ("label", "until"))
    until = _until(flt.get("until", []))
    gone = []
    for rec in f.ctx.networks.all():
        if endpoints.members(f.ctx.store, rec.id):
            continue
        if flt.get("label") and not _label_match(rec.labels, flt["label"]):
            continue
        if until is not None and rec.created_ns >= until:
            continue
        await f.ctx.networks.remove(rec, [])
        f.publish_network(rec.id, rec.name, "destroy")
        gone.append(rec.name)
    return web.json_response({"NetworksDeleted": gone or None})


def _until(values: list[str]) -> int | None:
    """Unix seconds (dockerd also takes durations; Berth only seconds: `until=$(date +%s)`)."""
    if not values:
        return None
    try:
        return int(float(values[0]) * 1e9)
    except ValueError:
        raise InvalidArgument(f"invalid until filter {values[0][:50]!r}: give unix "
                              "seconds") from None


async def _endpoint_request(request: web.Request) -> tuple[
        Front, dict[str, Any], str, NetworkRecord | None, ContainerRecord, PodRecord | None]:
    """What connect and disconnect both start from: the body, the network (None for a
    built-in one, by name), the container and its pod."""
    f = front(request)
    doc = await body(request, {})
    if not isinstance(doc, dict):
        raise InvalidArgument("the request body must be a JSON object")
    name, rec = _find(f, request.match_info["id"])
    c = model.container(f.ctx, str(doc.get("Container") or ""))
    return f, doc, name, rec, c, f.ctx.store.pods.get(c.pod_id)


async def connect(request: web.Request) -> web.StreamResponse:
    f, doc, name, rec, c, pod = await _endpoint_request(request)
    if pod is None or pod.extra.get("host_network") or pod.extra.get("no_network"):
        raise InvalidArgument(f"container {c.name} runs in the host's network or none: it "
                              "cannot join another network")
    if rec is None:
        raise InvalidArgument(f"container cannot be connected to the pre-defined network "
                              f"{name} after it was created (Berth connects user networks)")
    if any(a["network"] == rec.id for a in endpoints.attachments(pod)):
        raise PermissionDenied(f"endpoint with name {c.name} already exists in network "
                               f"{rec.name}")
    cfg = doc.get("EndpointConfig") or {}
    aliases, ip = bodymod.endpoint_config(cfg, f"EndpointConfig for {rec.name}")
    await f.ctx.networks.ready(rec)
    async with f.ctx.networks.lock:
        if ip:
            f.ctx.networks.check_address(rec, ip, [a["ip"] for _, a in endpoints.members(
                f.ctx.store, rec.id)])
        await endpoints.connect(f.ctx, pod, endpoints.Join(
            network=rec.id, conflist=f.ctx.networks.conflist(rec, bool(pod.ports)),
            aliases=aliases, ip=ip))
    f.publish_network(rec.id, rec.name, "connect", c.id)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    f, _, name, rec, c, pod = await _endpoint_request(request)
    net_id = rec.id if rec else builtin_id(name)
    att = next((a for a in endpoints.attachments(pod) if a["network"] == net_id), None) \
        if pod else None
    if att is None or pod is None:
        raise FailedPrecondition(f"container {c.id} is not connected to network {name}")
    async with f.ctx.networks.lock:
        await endpoints.disconnect(f.ctx, pod, att)
    f.publish_network(net_id, name, "disconnect", c.id)
    return web.Response(status=200)


ROUTES: list[Route] = [
    ("POST", "/networks/create", create), ("GET", "/networks", list_),
    ("POST", "/networks/prune", prune), ("GET", "/networks/{id}", inspect),
    ("DELETE", "/networks/{id}", remove), ("POST", "/networks/{id}/connect", connect),
    ("POST", "/networks/{id}/disconnect", disconnect),
]
