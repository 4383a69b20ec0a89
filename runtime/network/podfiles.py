"""The pod's /etc/resolv.conf, /etc/hosts and /etc/hostname, written once per sandbox."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"


@dataclass
class DNSConfig:
    """CRI's DNSConfig: kubelet has already merged cluster DNS and the pod's dnsConfig."""

    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def resolv_conf_text(dns: DNSConfig | None, host_resolv: str = HOST_RESOLV_CONF) -> str:
    """No DNSConfig (or an empty one) means the pod inherits the host's file, like containerd."""
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            with open(host_resolv) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts_text(hostname: str, pod_ips: list[str]) -> str:
    """kubelet's managed hosts layout: localhost entries, then the pod IPs with the hostname."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    lines += [f"{ip}\t{hostname}" for ip in pod_ips if ip]
    return "\n".join(lines) + "\n"


def write_pod_files(
    directory: str,
    hostname: str,
    pod_ips: list[str],
    dns: DNSConfig | None,
    host_network: bool = False,
    host_resolv: str = HOST_RESOLV_CONF,
    host_hosts: str = HOST_HOSTS,
) -> dict[str, str]:
    """Writes resolv.conf, hosts and hostname into `directory`. Host-network pods share the
    host's hosts file; any pod without a DNS config gets the host's resolv.conf."""
    paths = {
        "resolv.conf": os.path.join(directory, "resolv.conf"),
        "hosts": os.path.join(directory, "hosts"),
        "hostname": os.path.join(directory, "hostname"),
    }
    resolv = resolv_conf_text(dns, host_resolv)
    _write(paths["resolv.conf"], resolv)
    if host_network:
        try:
            with open(host_hosts) as f:
                hosts = f.read()
        except FileNotFoundError:
            hosts = hosts_text(hostname, [])
    else:
        hosts = hosts_text(hostname, pod_ips)
    _write(paths["hosts"], hosts)
    _write(paths["hostname"], hostname + "\n")
    return paths
