"""What lists read from memory: container states as the monitor last said, built replies."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

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


Entry = tuple[Any, str, bytes]  # record, state name, the item as the front end sends it


@dataclass
class Listing:
    """One list's items, each serialised once, for one generation of the inputs."""

    key: Hashable
    entries: list[Entry]
    whole: bytes  # the unfiltered reply: a repeated field is its items' encodings back to back


class ListCache:
    """Pre-built list replies: clients list every second, records change far less often."""

    def __init__(self) -> None:
        self._lists: dict[str, Listing] = {}

    def get(self, name: str, key: Hashable, build: Callable[[], list[Entry]]) -> Listing:
        hit = self._lists.get(name)
        if hit is None or hit.key != key:
            entries = build()
            hit = self._lists[name] = Listing(key, entries, b"".join(e[2] for e in entries))
        return hit
