"""List filters shared by pods, containers and stats: id prefix, state, label selector."""

from __future__ import annotations

from collections.abc import Mapping


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """CRI selectors are equality-only and all must hold."""
    return all(labels.get(k) == v for k, v in selector.items())


def id_match(wanted: str, actual: str) -> bool:
    """An empty filter matches everything; otherwise the id or a prefix of it, as crictl sends."""
    return not wanted or actual.startswith(wanted)
