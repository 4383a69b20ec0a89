"""Find, parse and (when allowed) generate the CNI network configuration berthd uses."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

GENERATED_MARK = "berth.generated"
DEFAULT_CONF_NAME = "10-berth.conflist"
CONF_EXTENSIONS = (".conf", ".conflist", ".json")


class ConfigError(Exception):
    """The network configuration is missing or unusable; the message is the CRI status reason."""


@dataclass
class NetworkList:
    """A conflist (a single .conf is wrapped as a one-plugin list, as libcni does)."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    path: str
    raw: bytes = field(repr=False, default=b"")
    generated: bool = False

    def plugin_types(self) -> list[str]:
        types = []
        for p in self.plugins:
            types.append(str(p.get("type", "")))
            ipam = p.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type"):
                types.append(str(ipam["type"]))
        return types


def parse(raw: bytes, path: str) -> NetworkList:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a JSON object")
    if "plugins" in doc:
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise ConfigError(f"{path}: conflist has no plugins")
    elif "type" in doc:
        plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
    else:
        raise ConfigError(f"{path}: neither a conflist nor a plugin config")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: network has no name")
    for p in plugins:
        if not isinstance(p, dict) or not p.get("type"):
            raise ConfigError(f"{path}: plugin without a type")
    return NetworkList(
        name=name,
        cni_version=str(doc.get("cniVersion", "1.0.0")),
        plugins=plugins,
        path=path,
        raw=raw,
        generated=bool(doc.get(GENERATED_MARK)),
    )


def load_first(conf_dir: str) -> NetworkList | None:
    """The lexically first parseable file wins, as in containerd and CRI-O."""
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return None
    for name in names:
        if not name.endswith(CONF_EXTENSIONS):
            continue
        path = os.path.join(conf_dir, name)
        try:
            with open(path, "rb") as f:
                return parse(f.read(), path)
        except (OSError, ConfigError):
            continue
    return None


def default_conflist(
    subnet: str, bridge: str = "berth0", name: str = "berth", data_dir: str | None = None
) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    if data_dir:
        ipam["dataDir"] = data_dir
    return {
        "cniVersion": "1.0.0",
        "name": name,
        GENERATED_MARK: True,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_atomic(path: str, doc: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def with_subnet(doc: dict[str, Any], subnet: str) -> dict[str, Any]:
    """The generated conflist with its host-local range replaced by the new pod CIDR."""
    out = json.loads(json.dumps(doc))
    for plugin in out["plugins"]:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam["ranges"] = [[{"subnet": subnet}]]
    return out
