"""The create body, checked field by field: wrong types get dockerd's 400, never a crash."""

from __future__ import annotations

import ipaddress
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidArgument
from engine.volumes import check_name

RESTART = ("", "no", "always", "unless-stopped", "on-failure")


def _want(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidArgument(f"json: cannot unmarshal {type(value).__name__} into field "
                              f"{where}{key} of type {names}")
    return value


def _strs(obj: dict[str, Any], key: str, where: str, split: bool = False) -> list[str] | None:
    """A list of strings; Cmd and Entrypoint may also be one string (a shell-less word list)."""
    value = _want(obj, key, (list, str) if split else list, where)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where}{key} must be a list of strings")
    return list(value)


def _labels(obj: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = _want(obj, key, dict, where) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{where}{key} must map strings to strings")
    return dict(value)


def endpoint_config(cfg: Any, where: str) -> tuple[list[str], str]:
    """An EndpointSettings' Aliases and IPAMConfig.IPv4Address (IPv6 ones are refused)."""
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"{where} must be a JSON object")
    aliases = _strs(cfg, "Aliases", f"{where}.") or []
    ipam = cfg.get("IPAMConfig") or {}
    if not isinstance(ipam, dict):
        raise InvalidArgument(f"{where}.IPAMConfig must be a JSON object")
    if ipam.get("IPv6Address") or ipam.get("LinkLocalIPs"):
        raise InvalidArgument("IPv6 and link-local container addresses are not supported by "
                              "Berth yet")
    ip = _want(ipam, "IPv4Address", str, f"{where}.IPAMConfig.") or ""
    return aliases, ip


def _endpoints(body: dict[str, Any], out: CreateBody) -> None:
    """NetworkingConfig: one endpoint, for the NetworkMode network (API 1.41's rule)."""
    nc = _want(body, "NetworkingConfig", dict, "") or {}
    eps = _want(nc, "EndpointsConfig", dict, "NetworkingConfig.") or {}
    if len(eps) > 1:
        raise InvalidArgument("Container cannot be connected to network endpoints: "
                              + ", ".join(sorted(eps)[:10]))
    for name, cfg in eps.items():
        out.aliases, out.ip = endpoint_config(cfg or {},
                                              f"NetworkingConfig.EndpointsConfig.{name}")
        if out.network_mode == "bridge" and name in ("bridge", "default") or \
                out.network_mode in ("host", "none"):
            if out.aliases:
                raise InvalidArgument("network-scoped alias is supported only for containers "
                                      "in user defined networks")
            if out.ip:
                raise InvalidArgument("user specified IP address is supported on user defined "
                                      "networks only")
        elif name != out.network_mode:
            raise InvalidArgument(f"NetworkingConfig names network {name[:100]} but the "
                                  f"container's NetworkMode is {out.network_mode[:100]}")


def _nonneg(obj: dict[str, Any], key: str, where: str) -> int:
    value = _want(obj, key, int, where) or 0
    if value < 0 and not (key == "PidsLimit" and value == -1):
        raise InvalidArgument(f"{where}{key} must not be negative, got {value}")
    return int(value)


@dataclass
class PortBinding:
    container_port: int
    protocol: str
    host_ip: str
    host_port: int  # 0: pick a free one at create


@dataclass
class Mount:
    """A bind (`source` is a host path) or a volume (`source` is its name; "" makes an
    anonymous one). `mode` is the option string as given, for inspect."""

    kind: str  # "bind" or "volume"
    source: str
    target: str
    readonly: bool
    mode: str = ""
    nocopy: bool = False  # a volume the image's content is not copied into
    labels: dict[str, str] = field(default_factory=dict)  # for a volume this create makes


@dataclass
class CreateBody:
    """What Berth acts on from POST /containers/create; `config`/`host_config` are kept as
    given for inspect."""

    image: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: int | None = None
    network_mode: str = "bridge"  # bridge, host, none, or a user network's name or id
    aliases: list[str] = field(default_factory=list)  # on the user network, from EndpointsConfig
    ip: str = ""  # its address there (IPAMConfig.IPv4Address, docker --ip)
    ports: list[PortBinding] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # Config.Volumes: anonymous volume paths
    memory: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)  # gids or group names in the image
    cap_drop: list[str] = field(default_factory=list)
    readonly_rootfs: bool = False
    auto_remove: bool = False
    restart: str = "no"
    restart_max: int = 0
    cdi_devices: list[str] = field(default_factory=list)  # DeviceRequests of the cdi driver


def parse_signal(value: str | int, where: str) -> int:
    """SIGTERM, TERM, 15 all name the same signal; an unknown one is a 400."""
    if isinstance(value, int) or str(value).isdigit():
        num = int(value)
        if not 0 < num < signal.NSIG:
            raise InvalidArgument(f"{where}: invalid signal: {value}")
        return num
    name = str(value).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    sig = getattr(signal, name, None)
    if not isinstance(sig, signal.Signals):
        raise InvalidArgument(f"{where}: invalid signal: {str(value)[:50]}")
    return int(sig)


def parse(body: Any) -> CreateBody:
    """The whole body; anything that could only fail later is refused now."""
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    image = _want(body, "Image", str, "") or ""
    if not image:
        raise InvalidArgument("Config.Image is required")
    hc = _want(body, "HostConfig", dict, "") or {}
    out = CreateBody(image=image, config={k: v for k, v in body.items()
                                          if k not in ("HostConfig", "NetworkingConfig")},
                     host_config=hc)
    out.cmd = _strs(body, "Cmd", "", split=True)
    out.entrypoint = _strs(body, "Entrypoint", "", split=True)
    out.env = _strs(body, "Env", "") or []
    for item in out.env:
        if not item.partition("=")[0]:
            raise InvalidArgument(f"invalid environment variable: {item[:100]}")
    out.user = _want(body, "User", str, "") or ""
    out.workdir = _want(body, "WorkingDir", str, "") or ""
    if out.workdir and not os.path.isabs(out.workdir):
        raise InvalidArgument(f"the working directory '{out.workdir[:300]}' is invalid, it "
                              "needs to be an absolute path")
    out.hostname = _want(body, "Hostname", str, "") or ""
    out.labels = _labels(body, "Labels", "")
    out.tty = bool(_want(body, "Tty", bool, ""))
    out.open_stdin = bool(_want(body, "OpenStdin", bool, ""))
    out.stdin_once = bool(_want(body, "StdinOnce", bool, ""))
    if (sig := _want(body, "StopSignal", (str, int), "")) not in (None, ""):
        out.stop_signal = parse_signal(sig, "StopSignal")
    out.stop_timeout = _want(body, "StopTimeout", int, "")
    _want(body, "ExposedPorts", dict, "")
    out.volumes = [_target(p) for p in _want(body, "Volumes", dict, "") or {}]
    _host(hc, out)
    seen: set[str] = set()
    for m in out.mounts:
        if m.target in seen:
            raise InvalidArgument(f"Duplicate mount point: {m.target[:300]}")
        seen.add(m.target)
    _endpoints(body, out)
    return out


def _host(hc: dict[str, Any], out: CreateBody) -> None:
    where = "HostConfig."
    mode = _want(hc, "NetworkMode", str, where) or "bridge"
    if mode.startswith("container:"):
        raise InvalidArgument("NetworkMode container:<id> is not supported by Berth yet")
    out.network_mode = "bridge" if mode == "default" else mode
    for key, value in (_want(hc, "PortBindings", dict, where) or {}).items():
        out.ports += _port_bindings(key, value)
    if out.ports and out.network_mode in ("host", "none"):
        raise InvalidArgument(f"conflicting options: port publishing and the container type "
                              f"network mode {out.network_mode}")
    for spec in _strs(hc, "Binds", where) or []:
        out.mounts.append(_bind(spec))
    for m in _want(hc, "Mounts", list, where) or []:
        out.mounts.append(_mount(m))
    out.memory = _nonneg(hc, "Memory", where)
    if out.memory and out.memory < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    out.nano_cpus = _nonneg(hc, "NanoCpus", where)
    if out.nano_cpus and out.nano_cpus < 10_000_000:
        raise InvalidArgument("Range of CPUs is from 0.01 to the number of CPUs available")
    out.cpu_shares = _nonneg(hc, "CpuShares", where)
    out.pids_limit = _nonneg(hc, "PidsLimit", where)
    out.privileged = bool(_want(hc, "Privileged", bool, where))
    out.cap_add = _strs(hc, "CapAdd", where) or []
    out.group_add = _strs(hc, "GroupAdd", where) or []
    out.cap_drop = _strs(hc, "CapDrop", where) or []
    out.readonly_rootfs = bool(_want(hc, "ReadonlyRootfs", bool, where))
    out.auto_remove = bool(_want(hc, "AutoRemove", bool, where))
    out.cdi_devices = _device_requests(hc, where)
    policy = _want(hc, "RestartPolicy", dict, where) or {}
    out.restart = _want(policy, "Name", str, "HostConfig.RestartPolicy.") or "no"
    if out.restart not in RESTART:
        raise InvalidArgument(f"invalid restart policy '{out.restart[:50]}'")
    out.restart_max = _nonneg(policy, "MaximumRetryCount", "HostConfig.RestartPolicy.")
    if out.restart_max and out.restart != "on-failure":
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used "
                              "with 'on-failure'")
    if out.auto_remove and out.restart not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")


def _device_requests(hc: dict[str, Any], where: str) -> list[str]:
    """CDI names from DeviceRequests with Driver "cdi" (what `docker run --device
    vendor.com/class=name` sends from Docker 25 on, and docker-py's DeviceRequest). Berth has
    no other device driver, so anything else (`--gpus`, driver "nvidia") is refused at create
    with dockerd's message, where dockerd without that driver fails at start."""
    names: list[str] = []
    for i, req in enumerate(_want(hc, "DeviceRequests", list, where) or []):
        at = f"{where}DeviceRequests[{i}]."
        if not isinstance(req, dict):
            raise InvalidArgument(f"{at[:-1]} must be an object")
        driver = _want(req, "Driver", str, at) or ""
        if driver != "cdi":
            caps = _want(req, "Capabilities", list, at) or []
            raise InvalidArgument(f"could not select device driver \"{driver[:50]}\" with "
                                  f"capabilities: {str(caps)[:200]}")
        ids = _strs(req, "DeviceIDs", at) or []
        if not ids:
            raise InvalidArgument(f"{at}DeviceIDs must name at least one CDI device")
        names += ids
    return names


def _port_bindings(key: str, value: Any) -> list[PortBinding]:
    port, _, proto = key.partition("/")
    proto = proto or "tcp"
    if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid port specification: \"{key[:50]}\"")
    out = []
    for b in value or []:
        if not isinstance(b, dict):
            raise InvalidArgument(f"PortBindings[{key[:50]}] entries must be objects")
        host_ip, host_port = b.get("HostIp") or "", str(b.get("HostPort") or "0")
        if not host_port.isdigit() or int(host_port) > 65535:
            raise InvalidArgument(f"invalid port specification: \"{host_port[:50]}\"")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise InvalidArgument(f"invalid IP address: {host_ip[:50]}") from None
        out.append(PortBinding(int(port), proto, host_ip, int(host_port)))
    return out


BIND_MODES = {"ro", "rw", "z", "Z", "rprivate", "private", "rslave", "slave", "rshared",
              "shared"}
VOLUME_MODES = {"ro", "rw", "z", "Z", "nocopy"}


def _bind(spec: str) -> Mount:
    """`/host:/ctr[:opts]` binds a host path; `name:/ctr[:opts]` mounts a named volume."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise InvalidArgument(f"invalid volume specification: '{spec[:300]}'")
    mode = parts[2] if len(parts) == 3 else ""
    opts = set(mode.split(",")) if mode else set()
    if opts & {"ro", "rw"} == {"ro", "rw"}:
        raise InvalidArgument(f"invalid mode: {mode[:50]}")
    if not os.path.isabs(parts[0]):
        if not opts <= VOLUME_MODES:
            raise InvalidArgument(f"invalid mode: {mode[:50]}")
        return Mount("volume", check_name(parts[0]), _target(parts[1]), "ro" in opts,
                     mode or "z", "nocopy" in opts)
    if not opts <= BIND_MODES:
        raise InvalidArgument(f"invalid mode: {mode[:50]}")
    return Mount("bind", _bind_source(parts[0]), _target(parts[1]), "ro" in opts, mode)


def _mount(m: Any) -> Mount:
    """One HostConfig.Mounts entry (the `--mount` flag): bind or volume."""
    if not isinstance(m, dict):
        raise InvalidArgument("HostConfig.Mounts entries must be objects")
    kind = m.get("Type") or "volume"
    src, dst = m.get("Source") or "", m.get("Target")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise InvalidArgument("HostConfig.Mounts: Source and Target must be strings")
    readonly = bool(_want(m, "ReadOnly", bool, "Mounts."))
    if kind == "bind":
        return Mount("bind", _bind_source(src), _target(dst), readonly)
    if kind != "volume":
        raise InvalidArgument(f"mount type {str(kind)[:50]} is not supported (bind and "
                              "volume mounts are)")
    if readonly and not src:
        raise InvalidArgument("invalid mount config for type \"volume\": must not set ReadOnly "
                              "mode when using anonymous volumes")
    opts = _want(m, "VolumeOptions", dict, "Mounts.") or {}
    driver = (_want(opts, "DriverConfig", dict, "Mounts.VolumeOptions.") or {}).get("Name")
    if driver not in (None, "", "local"):
        raise InvalidArgument(f"error looking up volume plugin {str(driver)[:100]}: plugin "
                              "not found (Berth serves the local driver)")
    return Mount("volume", check_name(src) if src else "", _target(dst), readonly, "z",
                 bool(_want(opts, "NoCopy", bool, "Mounts.VolumeOptions.")),
                 _labels(opts, "Labels", "Mounts.VolumeOptions."))


def _target(dst: str) -> str:
    if not os.path.isabs(dst) or "\x00" in dst:
        raise InvalidArgument(f"invalid mount config: mount path must be absolute: "
                              f"'{dst[:300]}'")
    dst = os.path.normpath(dst)
    if dst == "/":
        raise InvalidArgument("invalid specification: destination can't be '/'")
    return dst


def _bind_source(src: str) -> str:
    if not os.path.isabs(src) or "\x00" in src:
        raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: "
                              f"'{src[:300]}' mount path must be absolute")
    if not os.path.exists(src):
        raise InvalidArgument(f"invalid mount config for type \"bind\": bind source path does "
                              f"not exist: {src[:300]}")
    return os.path.normpath(src)
