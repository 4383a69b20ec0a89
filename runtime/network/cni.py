"""Run CNI plugins for pods the way libcni does: ADD in order with prevResult, DEL in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from runtime.network import conf as netconf
from runtime.network.conf import ConfigError, NetworkList

DEFAULT_BIN_DIRS = ["/usr/libexec/berth/cni", "/opt/cni/bin", "/usr/lib/cni"]
LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"}


class CNIError(Exception):
    """A plugin failed; carries the spec's error code and message."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{plugin} {command}: {msg}" + (f" ({details})" if details else ""))
        self.code = code


@dataclass
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass
class PodNetworkRequest:
    """What berthd knows about a sandbox when it asks for (or gives back) its network."""

    id: str
    name: str
    namespace: str
    uid: str
    netns: str
    port_mappings: list[PortMapping] = field(default_factory=list)
    ifname: str = "eth0"
    ips: list[str] = field(default_factory=list)  # asked-for addresses (the `ips` capability)


@dataclass
class PodNetworkResult:
    ips: list[str]
    interfaces: list[dict[str, Any]]
    raw: dict[str, Any]


@dataclass
class NetworkStatus:
    ready: bool
    reason: str = ""
    message: str = ""


@dataclass
class CNIConfig:
    """Where configs, plugins and the result cache live; mirrors berthd's config section."""

    conf_dir: str = "/etc/cni/net.d"
    bin_dirs: list[str] = field(default_factory=lambda: list(DEFAULT_BIN_DIRS))
    state_dir: str = "/var/lib/berth"
    install_default: bool = True
    default_subnet: str = "10.88.0.0/16"
    default_bridge: str = "berth0"
    default_name: str = "berth"
    ipam_data_dir: str | None = None
    loopback: bool = True
    timeout: float = 60.0


class CNIManager:
    """berthd's single entry point to pod networking."""

    def __init__(self, cfg: CNIConfig) -> None:
        self.cfg = cfg
        self.cache_dir = os.path.join(cfg.state_dir, "cni-cache", "results")

    # configuration

    def load(self) -> NetworkList:
        net = netconf.load_first(self.cfg.conf_dir)
        if net is None and self.cfg.install_default:
            self._write_default(self.cfg.default_subnet)
            net = netconf.load_first(self.cfg.conf_dir)
        if net is None:
            raise ConfigError(f"no network config found in {self.cfg.conf_dir}")
        return net

    def _write_default(self, subnet: str) -> None:
        doc = netconf.default_conflist(
            subnet, self.cfg.default_bridge, self.cfg.default_name, self.cfg.ipam_data_dir
        )
        netconf.write_atomic(os.path.join(self.cfg.conf_dir, netconf.DEFAULT_CONF_NAME), doc)

    def update_pod_cidr(self, cidr: str) -> bool:
        """UpdateRuntimeConfig: only a conflist we generated is ours to rewrite."""
        if not cidr:
            return False
        net = netconf.load_first(self.cfg.conf_dir)
        if net is None:
            if not self.cfg.install_default:
                return False
            self._write_default(cidr)
            return True
        if not net.generated:
            return False
        netconf.write_atomic(net.path, netconf.with_subnet(json.loads(net.raw), cidr))
        return True

    def find_plugin(self, kind: str) -> str | None:
        for d in self.cfg.bin_dirs:
            path = os.path.join(d, kind)
            if os.access(path, os.X_OK):
                return path
        return None

    def status(self) -> NetworkStatus:
        try:
            net = self.load()
        except (ConfigError, OSError) as exc:
            return NetworkStatus(False, "NetworkPluginNotReady", f"cni config uninitialized: {exc}")
        wanted = net.plugin_types() + (["loopback"] if self.cfg.loopback else [])
        missing = [t for t in wanted if self.find_plugin(t) is None]
        if missing:
            return NetworkStatus(
                False,
                "NetworkPluginNotReady",
                f"CNI plugins {missing} not found in {self.cfg.bin_dirs}",
            )
        return NetworkStatus(True)

    # pod operations

    async def setup(self, pod: PodNetworkRequest,
                    net: NetworkList | None = None) -> PodNetworkResult:
        """ADD on `net` (a user network's conflist), or on the conf dir's default network."""
        net = net or self.load()
        if self.cfg.loopback and pod.ifname == "eth0":
            await self._invoke(LOOPBACK_CONF, "ADD", pod, "lo", None)
        prev: dict[str, Any] | None = None
        try:
            for plugin in net.plugins:
                conf = self._plugin_conf(net, plugin, pod, prev)
                prev = await self._invoke(conf, "ADD", pod, pod.ifname, prev) or prev
        except BaseException:
            await self._del_chain(net, pod, prev)
            raise
        result = prev or {}
        self._save_cache(net, pod, result)
        ips = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
        return PodNetworkResult(ips=ips, interfaces=result.get("interfaces", []), raw=result)

    async def teardown(self, pod: PodNetworkRequest) -> None:
        """Uses the config and result cached at ADD, so it works across restarts and edits."""
        cached = self._load_cache(pod)
        if cached is not None:
            net = netconf.parse(cached["config"].encode(), "cache")
            prev = cached.get("result")
        else:
            try:
                net = self.load()
            except ConfigError:
                return  # never networked by us and nothing to run DEL with
            prev = None
        await self._del_chain(net, pod, prev)
        if self.cfg.loopback and pod.ifname == "eth0":
            await self._invoke(LOOPBACK_CONF, "DEL", pod, "lo", None)
        self._drop_cache(pod, net.name)

    async def check(self, pod: PodNetworkRequest) -> None:
        cached = self._load_cache(pod)
        if cached is None:
            raise ConfigError(f"no cached result for {pod.id}")
        net = netconf.parse(cached["config"].encode(), "cache")
        for plugin in net.plugins:
            conf = self._plugin_conf(net, plugin, pod, cached["result"])
            await self._invoke(conf, "CHECK", pod, pod.ifname, cached["result"])

    async def _del_chain(
        self, net: NetworkList, pod: PodNetworkRequest, prev: dict[str, Any] | None
    ) -> None:
        errors: list[Exception] = []
        for plugin in reversed(net.plugins):
            conf = self._plugin_conf(net, plugin, pod, prev)
            try:
                await self._invoke(conf, "DEL", pod, pod.ifname, prev)
            except (CNIError, OSError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _plugin_conf(
        self,
        net: NetworkList,
        plugin: dict[str, Any],
        pod: PodNetworkRequest,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """libcni's buildOneConfig: name/version injected, runtimeConfig only for capabilities."""
        conf = {k: v for k, v in plugin.items() if k != "capabilities"}
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities") or {}
        rc: dict[str, Any] = {}
        if caps.get("portMappings") and pod.port_mappings:
            rc["portMappings"] = [
                {
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol.lower(),
                    **({"hostIP": m.host_ip} if m.host_ip else {}),
                }
                for m in pod.port_mappings
            ]
        if caps.get("ips") and pod.ips:
            rc["ips"] = list(pod.ips)
        if rc:
            conf["runtimeConfig"] = rc
        return conf

    async def _invoke(
        self,
        conf: dict[str, Any],
        command: str,
        pod: PodNetworkRequest,
        ifname: str,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        kind = str(conf["type"])
        exe = self.find_plugin(kind)
        if exe is None:
            raise CNIError(kind, command, 50, f"plugin {kind} not found in {self.cfg.bin_dirs}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.id,
            "CNI_NETNS": pod.netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": os.pathsep.join(self.cfg.bin_dirs),
            "CNI_ARGS": ";".join(
                [
                    "IgnoreUnknown=1",
                    f"K8S_POD_NAMESPACE={pod.namespace}",
                    f"K8S_POD_NAME={pod.name}",
                    f"K8S_POD_INFRA_CONTAINER_ID={pod.id}",
                    f"K8S_POD_UID={pod.uid}",
                ]
            ),
        }
        proc = await asyncio.create_subprocess_exec(
            exe,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(conf).encode()), self.cfg.timeout
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CNIError(kind, command, 11, "plugin timed out") from None
        parsed: dict[str, Any] | None = None
        if out.strip():
            try:
                parsed = json.loads(out)
            except ValueError:
                raise CNIError(kind, command, 6, f"invalid output {out[:200]!r}") from None
        if proc.returncode != 0:
            p = parsed or {}
            msg = str(p.get("msg") or err.decode(errors="replace").strip() or "failed")
            raise CNIError(kind, command, int(p.get("code", 999)), msg, str(p.get("details", "")))
        return parsed if command == "ADD" else None

    # results cache (libcni layout: one JSON file per network/container/ifname)

    def _cache_path(self, net_name: str, pod: PodNetworkRequest) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{net_name}-{pod.id}-{pod.ifname}")
        return os.path.join(self.cache_dir, safe)

    def _save_cache(self, net: NetworkList, pod: PodNetworkRequest, result: dict[str, Any]) -> None:
        os.makedirs(self.cache_dir, exist_ok=True)
        doc = {
            "kind": "cniCacheV1",
            "containerId": pod.id,
            "ifName": pod.ifname,
            "networkName": net.name,
            "config": net.raw.decode(),
            "netns": pod.netns,
            "result": result,
        }
        path = self._cache_path(net.name, pod)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)

    def _load_cache(self, pod: PodNetworkRequest) -> dict[str, Any] | None:
        """Found by container id and ifname whatever the network is called now."""
        try:
            names = os.listdir(self.cache_dir)
        except FileNotFoundError:
            return None
        suffix = re.sub(r"[^A-Za-z0-9_.-]", "_", f"-{pod.id}-{pod.ifname}")
        for name in sorted(names):
            if name.endswith(suffix):
                try:
                    with open(os.path.join(self.cache_dir, name)) as f:
                        doc: dict[str, Any] = json.load(f)
                    return doc
                except (OSError, ValueError):
                    continue
        return None

    def _drop_cache(self, pod: PodNetworkRequest, net_name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._cache_path(net_name, pod))
