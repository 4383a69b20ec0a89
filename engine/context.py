"""What both front ends share: config, metadata store and the runtime handles."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.endpoints import NameIndex
from engine.networks import Networks
from engine.statecache import ListCache, StateCache
from engine.store import PodRecord, Store
from engine.volumes import Volumes
from runtime.containers import ContainerEvent, MonitorClient
from runtime.images.store import ImageStore
from runtime.monitor.state import ContainerState
from runtime.network.cni import CNIManager, PodNetworkRequest, PortMapping

Condition = tuple[bool, str, str]


def cgroup_version(root: str) -> str:
    """v2 only when the root itself is cgroup2; this machine's hybrid layout counts as v1."""
    return "v2" if Path(root, "cgroup.controllers").exists() else "v1"


@dataclass
class Context:
    """One per daemon; each front end reads the same store, images, network and monitor."""

    config: Config
    store: Store
    images: ImageStore
    network: CNIManager
    monitor: MonitorClient
    states: StateCache = field(default_factory=StateCache)
    lists: ListCache = field(default_factory=ListCache)
    # called as (image ref, bytes newly stored, seconds, succeeded) after every PullImage
    pull_observers: list[Callable[[str, int, float, bool], None]] = field(default_factory=list)
    # called with every monitor event, after the state cache took it (front ends' event feeds)
    listeners: list[Callable[[ContainerEvent], None]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    @functools.cached_property
    def volumes(self) -> Volumes:
        """Local volumes under the state dir (the Docker front end's; kubelet mounts paths)."""
        return Volumes(self.store, self.config.state_dir)

    @functools.cached_property
    def names(self) -> NameIndex:
        return NameIndex(self.store, self.states)

    @functools.cached_property
    def networks(self) -> Networks:
        """User-defined networks (the Docker front end's), each with its DNS listener."""
        return Networks(self.config, self.store, self.network, self.names.resolve)

    def volume_users(self, name: str) -> list[str]:
        """Names of the containers whose mounts use volume `name`."""
        return [c.name for c in self.store.containers.scan()
                if name in c.extra.get("volumes", ())]

    @property
    def cgroup_version(self) -> str:
        return cgroup_version(self.config.runtime.cgroup_root)

    def pod_dir(self, pod_id: str) -> Path:
        """Per-pod files (hosts, resolv.conf, hostname) that containers bind-mount."""
        return Path(self.config.state_dir) / "pods" / pod_id

    def ns_dir(self, pod_id: str) -> Path:
        """Pinned namespaces live in the run dir: they die with the machine anyway."""
        return Path(self.config.run_dir) / "pods" / pod_id

    def bundle_dir(self, container_id: str) -> Path:
        return Path(self.config.state_dir) / "bundles" / container_id

    def network_request(self, pod: PodRecord, netns: str,
                        ifname: str = "eth0") -> PodNetworkRequest:
        """The same request for ADD and DEL, rebuilt from the stored record after a restart.
        Published ports ride on eth0, the pod's first network."""
        ports = [PortMapping(**p) for p in pod.ports] if ifname == "eth0" else []
        return PodNetworkRequest(id=pod.id, name=pod.name, namespace=pod.namespace, uid=pod.uid,
                                 netns=netns, port_mappings=ports, ifname=ifname)

    async def container_states(self) -> dict[str, ContainerState]:
        """From the event-fed cache once it is synced; from the monitor until then."""
        if self.states.synced:
            return self.states.states
        return {s.id: s for s in await self.monitor.list()}

    def runtime_ready(self) -> Condition:
        """The runtime is ready when its state dir is usable."""
        if not os.access(self.config.state_dir, os.W_OK):
            return False, "StateDirUnwritable", f"{self.config.state_dir} is not writable"
        return True, "", ""

    def network_ready(self) -> Condition:
        """Ready when a usable CNI config and its plugins exist; kubelet waits until then."""
        st = self.network.status()
        return st.ready, st.reason, st.message

    def describe_config(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self.config)))
