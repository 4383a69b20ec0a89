"""Docker's view of engine records: names, id/prefix/name lookup, and the state words."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.context import Context
from engine.errors import AlreadyExists, InvalidArgument, NotFound
from engine.events import EventHub
from engine.store import DOCKER, ContainerRecord
from runtime.monitor.state import ContainerState

NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # dockerd's validContainerNamePattern
T = TypeVar("T")
MAX_NAME = 253
HISTORY = 1000
_LEFT = ("brave", "calm", "eager", "happy", "keen", "lucid", "merry", "quiet", "swift", "wise")
_RIGHT = ("lovelace", "hopper", "turing", "curie", "noether", "ritchie", "thompson", "knuth")


@dataclass
class Front:
    """The Docker front end's state beside the engine context: exec sessions, waiters, events,
    and what the restart policy needs to remember between exits."""

    ctx: Context
    execs: dict[str, Any] = field(default_factory=dict)
    hub: EventHub[dict[str, Any]] = field(default_factory=EventHub)
    stopping: set[str] = field(default_factory=set)  # stopped by a user: no restart follows
    started: dict[str, float] = field(default_factory=dict)
    backoff: dict[str, float] = field(default_factory=dict)
    waiters: dict[tuple[str, str], list[asyncio.Future[int]]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    restarting: set[str] = field(default_factory=set)  # waiting out the restart back-off
    readers: dict[str, set[asyncio.Task[None]]] = field(default_factory=dict)  # attach output
    health: dict[str, Any] = field(default_factory=dict)  # container id → health.Health
    history: list[dict[str, Any]] = field(default_factory=list)  # recent events, for `since`
    ps_rows: dict[str, Any] = field(default_factory=dict)  # container id → ps.Row

    def waiter(self, cid: str, kind: str) -> asyncio.Future[int]:
        """Resolved with the exit code at the container's next `kind` event."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault((cid, kind), []).append(fut)
        return fut

    def resolve(self, cid: str, kind: str, exit_code: int) -> None:
        for fut in self.waiters.pop((cid, kind), []):
            if not fut.done():
                fut.set_result(exit_code)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Background work (restarts, auto-remove, exec pumps) kept referenced until done."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def reading(self, cid: str, task: asyncio.Task[None]) -> None:
        """An attach is copying this container's output; auto-remove waits for it."""
        tasks = self.readers.setdefault(cid, set())
        tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            if not tasks:
                self.readers.pop(cid, None)
        task.add_done_callback(done)

    async def complete(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run engine work to its end even if the client hangs up (aiohttp then cancels the
        handler): a create or remove cut in half would leave half an object behind."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return await asyncio.shield(task)

    def forget(self, cid: str) -> None:
        for d in (self.started, self.backoff, self.health):
            d.pop(cid, None)
        self.stopping.discard(cid)

    def publish(self, rec: ContainerRecord, action: str, attrs: dict[str, str]) -> None:
        """One Docker event; the last HISTORY are kept for `since` queries."""
        if not action:
            return
        now = time.time_ns()
        ev = {"status": action, "id": rec.id, "from": rec.image, "Type": "container",
              "Action": action, "Actor": {"ID": rec.id, "Attributes": {
                  **rec.labels, "image": rec.image, "name": rec.name, **attrs}},
              "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
        self.history.append(ev)
        del self.history[:-HISTORY]
        self.hub.publish(ev)

    def publish_volume(self, name: str, action: str) -> None:
        now = time.time_ns()
        ev = {"Type": "volume", "Action": action,
              "Actor": {"ID": name, "Attributes": {"driver": "local"}}, "scope": "local",
              "time": now // 1_000_000_000, "timeNano": now}
        self.history.append(ev)
        del self.history[:-HISTORY]
        self.hub.publish(ev)

    def publish_network(self, net_id: str, name: str, action: str, container: str = "") -> None:
        now = time.time_ns()
        attrs = {"name": name, "type": "bridge", **({"container": container} if container else {})}
        ev = {"Type": "network", "Action": action, "Actor": {"ID": net_id, "Attributes": attrs},
              "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
        self.history.append(ev)
        del self.history[:-HISTORY]
        self.hub.publish(ev)

    def publish_image(self, ref: str, action: str) -> None:
        now = time.time_ns()
        ev = {"status": action, "id": ref, "Type": "image", "Action": action,
              "Actor": {"ID": ref, "Attributes": {"name": ref}}, "scope": "local",
              "time": now // 1_000_000_000, "timeNano": now}
        self.history.append(ev)
        del self.history[:-HISTORY]
        self.hub.publish(ev)


def check_name(name: str) -> str:
    """A name as Docker accepts it, without its leading slash."""
    if len(name) > MAX_NAME or not NAME.match(name):
        raise InvalidArgument(f"Invalid container name ({name[:300]}), only "
                              "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def new_name(ctx: Context) -> str:
    """adjective_scientist plus a random tail, unused among Docker's containers."""
    while True:
        name = f"{secrets.choice(_LEFT)}_{secrets.choice(_RIGHT)}_{secrets.token_hex(2)}"
        if by_name(ctx, name) is None:
            return name


def by_name(ctx: Context, name: str) -> ContainerRecord | None:
    name = name.lstrip("/")
    return next((r for r in ctx.store.containers.owned(DOCKER) if r.name == name), None)


def reserve_name(ctx: Context, name: str, for_id: str = "") -> None:
    """Names are unique among Docker's containers; the message is dockerd's."""
    holder = by_name(ctx, name)
    if holder is not None and holder.id != for_id:
        raise AlreadyExists(f'Conflict. The container name "/{name}" is already in use by '
                            f'container "{holder.id}". You have to remove (or rename) that '
                            "container to be able to reuse that name.")


def container(ctx: Context, given: str) -> ContainerRecord:
    """dockerd's order: full id, then exact name, then a unique id prefix."""
    if not given:
        raise NotFound("No such container: ")
    table = ctx.store.containers
    rec = table.get(given)
    if rec is not None and rec.owner == DOCKER:
        return rec
    rec = by_name(ctx, given)
    if rec is not None:
        return rec
    matches = [i for i in table.ids_with_prefix(given) if table.owner_of(i) == DOCKER]
    if len(matches) > 1:
        raise InvalidArgument(f"multiple IDs found with provided prefix: {given[:100]}")
    found = table.get(matches[0]) if matches else None
    if found is None:
        raise NotFound(f"No such container: {given[:300]}")
    return found


def docker(rec: ContainerRecord) -> dict[str, Any]:
    """The Docker-only part of a record: Config and HostConfig as given, restart count."""
    return dict(rec.extra.get("docker") or {})


def status(st: ContainerState | None, paused: bool = False, restarting: bool = False) -> str:
    """Docker's State.Status word."""
    if restarting:
        return "restarting"
    if st is None:
        return "created"
    if st.status == "running":
        return "paused" if paused else "running"
    if st.status == "stopped":
        return "exited"
    return "created"
