"""PodSandboxConfig checks and the pod's own files (/etc/hosts, resolv.conf, hostname)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Any

from cri.errors import InvalidArgument, require
from proto import api_pb2 as pb
from runtime import sysctl

_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                       re.IGNORECASE)
PROTOCOLS = {pb.Protocol.TCP: "tcp", pb.Protocol.UDP: "udp", pb.Protocol.SCTP: "sctp"}


def validate(cfg: pb.PodSandboxConfig) -> None:
    """Reject what would fail half-way through RunPodSandbox, before anything is created."""
    if not cfg.HasField("metadata"):
        raise InvalidArgument("config.metadata is required")
    require(cfg.metadata.name, "config.metadata.name")
    require(cfg.metadata.namespace, "config.metadata.namespace")
    require(cfg.metadata.uid, "config.metadata.uid")
    for what in ("name", "namespace", "uid"):
        check_name(getattr(cfg.metadata, what), f"config.metadata.{what}")
    if cfg.metadata.attempt < 0:
        raise InvalidArgument("config.metadata.attempt must not be negative")
    if cfg.hostname and (len(cfg.hostname) > 64 or not _HOSTNAME.match(cfg.hostname)):
        raise InvalidArgument(f"config.hostname '{cfg.hostname}' is not a valid hostname")
    if "\x00" in cfg.log_directory:
        raise InvalidArgument("config.log_directory must not contain a NUL byte")
    if cfg.log_directory and not os.path.isabs(cfg.log_directory):
        raise InvalidArgument(f"config.log_directory '{cfg.log_directory}' must be absolute")
    parent = cfg.linux.cgroup_parent
    if ".." in parent.split("/"):
        raise InvalidArgument(f"config.linux.cgroup_parent '{parent}' must not contain '..'")
    for i, pm in enumerate(cfg.port_mappings):
        where = f"config.port_mappings[{i}]"
        if not 0 < pm.container_port < 65536:
            raise InvalidArgument(f"{where}.container_port {pm.container_port} is not a port")
        if not 0 <= pm.host_port < 65536:
            raise InvalidArgument(f"{where}.host_port {pm.host_port} is not a port")
        if pm.protocol not in PROTOCOLS:
            raise InvalidArgument(f"{where}.protocol {pm.protocol} is unknown")
        if pm.host_ip:
            _ip(pm.host_ip, f"{where}.host_ip")
    for server in cfg.dns_config.servers:
        _ip(server, "config.dns_config.servers")
    opts = cfg.linux.security_context.namespace_options
    host_net = opts.network == pb.NamespaceMode.NODE
    if host_net and cfg.hostname and cfg.hostname != socket.gethostname():
        # a host-network pod shares the node's UTS namespace (as containerd's does)
        raise InvalidArgument(
            f"config.hostname '{cfg.hostname}': unable to set hostname without a private UTS "
            f"namespace (a host-network pod uses the node's, whose hostname is "
            f"'{socket.gethostname()}')")
    try:
        sysctl.validate(dict(cfg.linux.sysctls), host_net=host_net,
                        host_ipc=opts.ipc == pb.NamespaceMode.NODE, host_uts=host_net)
    except ValueError as exc:
        raise InvalidArgument(f"config.linux.sysctls: {exc}") from None


MAX_NAME = 253  # a Kubernetes object name (DNS subdomain) is at most this long


def check_name(value: str, where: str) -> None:
    """Names end up in messages, logs and annotations: no control characters, bounded length."""
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"{where} is {len(value)} characters long (at most {MAX_NAME})")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArgument(f"{where} {value!r} contains control characters")


def _ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"{where}: '{value}' is not an IP address") from None


def hostname(cfg: pb.PodSandboxConfig) -> str:
    """An unnamed pod takes the node's hostname, as containerd does."""
    return cfg.hostname or socket.gethostname()


def ports(cfg: pb.PodSandboxConfig) -> list[dict[str, Any]]:
    """The mappings CNI's portmap needs, kept on the pod record for ADD and DEL alike."""
    return [{"host_port": p.host_port, "container_port": p.container_port,
             "protocol": PROTOCOLS[p.protocol], "host_ip": p.host_ip}
            for p in cfg.port_mappings if p.host_port]
