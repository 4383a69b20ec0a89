"""What a user network may be: the create request and the checks on it that need no state
(name, driver, driver options, address syntax), apart from the table that `engine.networks`
keeps."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from engine.errors import InvalidArgument, NotFound, PermissionDenied

BUILTIN = ("bridge", "host", "none")
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # dockerd's network name pattern
MAX_NAME = 128
BRIDGE_OPT = "com.docker.network.bridge.name"
# driver options Berth acts on (bridge name, MTU) or takes at dockerd's default value only
# (masquerade and inter-container traffic on); any other option is refused, never ignored
KNOWN_OPTS = {BRIDGE_OPT, "com.docker.network.bridge.enable_ip_masquerade",
              "com.docker.network.bridge.enable_icc", "com.docker.network.driver.mtu"}


def builtin_id(name: str) -> str:
    """Stable ids for the built-in networks, the same on every start."""
    return hashlib.sha256(f"berth-network-{name}".encode()).hexdigest()


@dataclass
class NetworkSpec:
    """POST /networks/create in the engine's words."""

    name: str
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


def parse_net(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text[:100]!r} is not an IPv4 CIDR") from None


def _check_opts(options: dict[str, str]) -> None:
    for key, value in options.items():
        if key not in KNOWN_OPTS:
            raise InvalidArgument(f"invalid driver option {key[:100]!r} for the bridge driver")
        if key == BRIDGE_OPT and not re.fullmatch(r"[a-zA-Z0-9_.-]{1,15}", value):
            raise InvalidArgument(f"invalid bridge name {value[:100]!r}: 1-15 characters of "
                                  "[a-zA-Z0-9_.-]")
        if key.endswith(("enable_ip_masquerade", "enable_icc")) and value not in ("true", "1"):
            raise InvalidArgument(f"{key}={value[:20]} is not supported (Berth always "
                                  "masquerades and lets containers on one network talk)")
        if key.endswith("mtu") and not (value.isdigit() and 68 <= int(value) <= 65535):
            raise InvalidArgument(f"invalid MTU {value[:20]!r}")


def check(spec: NetworkSpec) -> None:
    """Everything about a create that needs no state: name, driver, options."""
    if not spec.name or len(spec.name) > MAX_NAME or not NAME.match(spec.name):
        raise InvalidArgument(f"invalid network name {spec.name[:100]!r}: only "
                              "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if spec.name in BUILTIN:
        raise PermissionDenied(f"{spec.name} is a pre-defined network and cannot be "
                               "created")
    if spec.driver not in ("bridge", "overlay"):
        raise NotFound(f"plugin \"{spec.driver[:100]}\" not found")
    if spec.driver == "bridge":  # an overlay's options are checked by engine/overlay.py
        _check_opts(spec.options)


def is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
