"""Docker's DOCKER-ISOLATION semantics in nftables: user networks never forward to each other.

One table per berthd (`ip berth_isolation_<8 hex of the state dir>`, so two daemons on one
host, as test sessions run them, never rewrite each other's), rebuilt whole in one nft
transaction (through libnftables, `libnft.py`) from the networks that have a bridge each time
one gets or loses it (and at start-up), so it always says what the store says; with no such
network left the table is deleted. Per network bridge X:

- X <-> any other bridge in the set (user networks and the default bridge) is dropped;
- an `internal` network's bridge forwards to and from nothing at all.

Traffic inside one bridge is bridged, not routed (with br_netfilter it shows up here with the
same bridge on both sides, and the `!=` keeps it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from runtime.network import libnft

PREFIX = "berth_isolation_"


def table_name(state_dir: str) -> str:
    return PREFIX + hashlib.sha256(state_dir.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class IsolatedBridge:
    name: str
    internal: bool = False


def ruleset(table: str, bridges: list[IsolatedBridge], others: list[str]) -> str:
    """The nft script: flush-and-define in one transaction (an empty list deletes the table)."""
    head = f"table ip {table}\ndelete table ip {table}\n"
    if not bridges:
        return head
    names = sorted({b.name for b in bridges} | set(others))
    lines = []
    for b in bridges:
        if b.internal:
            lines += [f'iifname "{b.name}" oifname != "{b.name}" drop',
                      f'oifname "{b.name}" iifname != "{b.name}" drop']
        else:
            lines += [f'iifname "{b.name}" oifname != "{b.name}" oifname @bridges drop',
                      f'oifname "{b.name}" iifname != "{b.name}" iifname @bridges drop']
    elements = ", ".join(f'"{n}"' for n in names)
    body = "\n    ".join(lines)
    return (head + f"table ip {table} {{\n"
            f"  set bridges {{ type ifname; elements = {{ {elements} }}; }}\n"
            f"  chain forward {{\n    type filter hook forward priority filter; policy accept;\n"
            f"    {body}\n  }}\n}}\n")


async def apply(table: str, bridges: list[IsolatedBridge], others: list[str]) -> None:
    """`others`: bridges that are not user networks but must not reach them (the default)."""
    await libnft.run(ruleset(table, bridges, others))
