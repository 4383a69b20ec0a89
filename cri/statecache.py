"""What lists read from memory: container states as the monitor last said, parsed metadata."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from cri.store import ContainerRecord, PodRecord
from proto import api_pb2 as pb
from runtime.monitor.state import ContainerState

# A container only moves forward through these, so an update that would go back is stale.
RANK = {"created": 0, "running": 1, "stopped": 2}


class StateCache:
    """Fed by the monitor's event stream and by berthd's own calls; trusted once synced."""

    def __init__(self) -> None:
        self.states: dict[str, ContainerState] = {}
        self.synced = False
        self.generation = 0  # bumped whenever a state is stored or dropped

    def apply(self, st: ContainerState) -> None:
        cur = self.states.get(st.id)
        if cur is None or RANK.get(st.status, 0) >= RANK.get(cur.status, 0):
            self.states[st.id] = st
            self.generation += 1

    def drop(self, container_id: str) -> None:
        if self.states.pop(container_id, None) is not None:
            self.generation += 1

    def resync(self, snapshot: Iterable[ContainerState]) -> None:
        """A fresh list from the monitor: forget what it no longer has, then apply the rest."""
        fresh = {st.id: st for st in snapshot}
        for gone in set(self.states) - set(fresh):
            del self.states[gone]
            self.generation += 1
        for st in fresh.values():
            self.apply(st)
        self.synced = True


class MetadataCache:
    """CRI metadata parsed once per stored config, not once per record per list call."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[bytes, pb.PodSandboxMetadata]] = {}
        self._containers: dict[str, tuple[bytes, pb.ContainerMetadata]] = {}

    def pod(self, rec: PodRecord) -> pb.PodSandboxMetadata:
        hit = self._pods.get(rec.id)
        if hit is None or hit[0] is not rec.config:
            hit = (rec.config, pb.PodSandboxConfig.FromString(rec.config).metadata)
            self._pods[rec.id] = hit
        return hit[1]

    def container(self, rec: ContainerRecord) -> pb.ContainerMetadata:
        hit = self._containers.get(rec.id)
        if hit is None or hit[0] is not rec.config:
            hit = (rec.config, pb.ContainerConfig.FromString(rec.config).metadata)
            self._containers[rec.id] = hit
        return hit[1]

    def forget(self, record_id: str) -> None:
        self._pods.pop(record_id, None)
        self._containers.pop(record_id, None)


Entry = tuple[Any, str, bytes]  # record, CRI state name, the item as a repeated field on the wire


@dataclass
class Listing:
    """One list's items, each serialised once, for one generation of the inputs."""

    key: Hashable
    entries: list[Entry]
    whole: bytes  # the unfiltered reply: a repeated field is its items' encodings back to back


class ListCache:
    """Pre-serialised list replies: kubelet lists every second, records change far less often."""

    def __init__(self) -> None:
        self._lists: dict[str, Listing] = {}

    def get(self, name: str, key: Hashable, build: Callable[[], list[Entry]]) -> Listing:
        hit = self._lists.get(name)
        if hit is None or hit.key != key:
            entries = build()
            hit = self._lists[name] = Listing(key, entries, b"".join(e[2] for e in entries))
        return hit
