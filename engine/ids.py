"""Object ids: 64 hex chars like containerd's, and the unique-prefix lookup crictl relies on."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar

from engine.errors import InvalidArgument, NotFound
from engine.store import K8S, ContainerRecord, PodRecord, Table

R = TypeVar("R", PodRecord, ContainerRecord)


def new_id() -> str:
    return secrets.token_hex(32)


def resolve(given: str, kind: str, prefix_lookup: Callable[[str], list[str]]) -> str:
    """Full ids pass; a unique prefix expands; an ambiguous or unknown one is refused by name."""
    if not given:
        raise InvalidArgument(f"{kind} id is required")
    matches = prefix_lookup(given)
    if given in matches:
        return given
    if not matches:
        raise NotFound(f"{kind} {given} not found")
    if len(matches) > 1:
        raise InvalidArgument(f"{kind} id prefix {given} is ambiguous ({len(matches)} matches)")
    return matches[0]


def lookup(table: Table[R], given: str, kind: str, owner: str = K8S) -> R:
    """The record for a full id or unique prefix, or NOT_FOUND naming what was asked for.

    Only the owner's records count: another front end's objects are invisible, not ambiguous.
    """
    def owned(prefix: str) -> list[str]:
        return [i for i in table.ids_with_prefix(prefix) if table.owner_of(i) == owner]

    rec = table.get(resolve(given, kind, owned))
    if rec is None:
        raise NotFound(f"{kind} {given} not found")
    return rec
