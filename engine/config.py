"""berthd configuration: an embedded default, overlaid by an optional TOML file."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/etc/berth/berth.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A config problem worth one clear line to the operator, never a traceback."""


@dataclass
class CniConfig:
    conf_dir: str = "/etc/cni/net.d"
    bin_dirs: list[str] = field(
        default_factory=lambda: ["/usr/libexec/berth/cni", "/opt/cni/bin", "/usr/lib/cni"]
    )
    default_subnet: str = "10.88.0.0/16"
    install_default_conflist: bool = True


@dataclass
class RegistryConfig:
    insecure: list[str] = field(default_factory=list)
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    progress_timeout: float = 300.0
    max_concurrent_downloads: int = 3


@dataclass
class MetricsConfig:
    address: str = "127.0.0.1:9323"


@dataclass
class StreamingConfig:
    address: str = "127.0.0.1:0"
    token_ttl: float = 60.0


@dataclass
class DockerConfig:
    """The Docker Engine API socket (docker CLI, docker-py, compose); "" turns it off."""

    socket: str = "/run/berth/docker.sock"
    max_connections: int = 1024
    max_body: int = 1 << 20  # JSON request bodies; image layers never come through here
    # user networks without --subnet take the next free /network_pool_size of this pool
    # (dockerd's default-address-pools); subnets of existing routes are skipped
    network_pool: str = "172.18.0.0/15"
    network_pool_size: int = 24
    # the embedded DNS sends names it does not own to the host's resolvers (/etc/resolv.conf);
    # off, it answers them REFUSED
    dns_forward: bool = True


@dataclass
class CdiConfig:
    spec_dirs: list[str] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])


@dataclass
class StatsConfig:
    fs_scan_period: float = 10.0  # seconds between walks of every container's writable layer
    # Seconds an unfiltered ListContainerStats / ListPodSandboxStats answer is reused while no
    # pod, container or state changed (cAdvisor's housekeeping period; kubelet polls every 10 s)
    list_max_age: float = 1.0


@dataclass
class RuntimeConfig:
    cgroup_driver: str = "cgroupfs"
    cgroup_root: str = "/sys/fs/cgroup"


@dataclass
class Config:
    log_level: str = "info"
    state_dir: str = "/var/lib/berth"
    run_dir: str = "/run/berth"
    socket: str = ""
    cni: CniConfig = field(default_factory=CniConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    cdi: CdiConfig = field(default_factory=CdiConfig)

    @property
    def socket_path(self) -> str:
        """The socket lives in the run dir unless placed elsewhere on purpose."""
        return self.socket or str(Path(self.run_dir) / "berth.sock")

    @property
    def docker_socket_path(self) -> str:
        """The same rule: the default path follows a moved run dir; "" means no Docker API."""
        if self.docker.socket == DockerConfig.socket and self.run_dir != Config.run_dir:
            return str(Path(self.run_dir) / "docker.sock")
        return self.docker.socket


def _merge(target: Any, data: dict[str, Any], where: str) -> None:
    """Copy known keys onto a dataclass, refusing unknown keys and wrong types by name."""
    known = {f.name: f for f in fields(target)}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key '{name}'")
        current = getattr(target, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{name}' must be a table")
            _merge(current, value, f"{name}.")
            continue
        expected: type = type(current)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(
                f"config key '{name}' must be {expected.__name__}, got {type(value).__name__}"
            )
        setattr(target, key, value)


def _validate(cfg: Config) -> None:
    """Catch values that would only fail later, deep inside start-up."""
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    for key in ("state_dir", "run_dir"):
        if not Path(getattr(cfg, key)).is_absolute():
            raise ConfigError(f"{key} must be an absolute path")
    if not Path(cfg.socket_path).is_absolute():
        raise ConfigError("socket must be an absolute path")
    try:
        ipaddress.ip_network(cfg.cni.default_subnet)
    except ValueError as exc:
        raise ConfigError(f"cni.default_subnet: {exc}") from None
    for key in ("metrics", "streaming"):
        addr = getattr(cfg, key).address
        if addr and not _is_host_port(addr):
            raise ConfigError(f"{key}.address must be HOST:PORT, got '{addr}'")
    if cfg.docker.socket and not Path(cfg.docker.socket).is_absolute():
        raise ConfigError("docker.socket must be an absolute path (or \"\" to disable)")
    if cfg.docker.max_connections < 1 or cfg.docker.max_body < 1024:
        raise ConfigError("docker.max_connections must be at least 1 and docker.max_body "
                          "at least 1024")
    try:
        pool = ipaddress.IPv4Network(cfg.docker.network_pool)
    except ValueError as exc:
        raise ConfigError(f"docker.network_pool: {exc}") from None
    if not pool.prefixlen <= cfg.docker.network_pool_size <= 30:
        raise ConfigError(f"docker.network_pool_size must be between {pool.prefixlen} (the "
                          "pool's own prefix) and 30")
    if cfg.runtime.cgroup_driver != "cgroupfs":
        raise ConfigError("runtime.cgroup_driver: only \"cgroupfs\" is supported")
    if cfg.stats.fs_scan_period <= 0:
        raise ConfigError("stats.fs_scan_period must be positive")
    if cfg.stats.list_max_age < 0:
        raise ConfigError("stats.list_max_age must not be negative")
    if cfg.registry.progress_timeout <= 0:
        raise ConfigError("registry.progress_timeout must be positive")
    if cfg.registry.max_concurrent_downloads < 1:
        raise ConfigError("registry.max_concurrent_downloads must be at least 1")


def _is_host_port(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) < 65536)


def load(path: str | None) -> Config:
    """Load the config; a missing default file means the embedded defaults."""
    cfg = Config()
    chosen = path or DEFAULT_CONFIG_PATH
    try:
        text = Path(chosen).read_text()
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"config file {chosen} does not exist") from None
        text = ""
    except OSError as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {chosen} is not valid TOML: {exc}") from None
    _merge(cfg, data, "")
    _validate(cfg)
    return cfg
