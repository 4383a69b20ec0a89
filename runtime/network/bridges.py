"""Linux bridges for user networks: made (with the gateway address) when the first container
joins the network, before its DNS listener binds there; deleted with the network.

Netlink through the CNI plugins' own client (`cni_plugins/nl.py`, so the tree has one), in a
worker thread: no process per change, and the kernel's slow part (a bridge's unregister waits
for RCU, tens of ms) never holds the event loop. Routes are read the same way to keep a new
network's subnet off anything the host already routes.
"""

from __future__ import annotations

import asyncio
import ipaddress

from cni_plugins import nl


class BridgeError(Exception):
    """The kernel refused a change; the message says which and why."""


class LinkExists(BridgeError):
    """A new network named a bridge the host already has: never taken over (or later deleted)."""


def _create(name: str, gateway: str, prefixlen: int, adopt: bool) -> None:
    with nl.Netlink() as sock:
        link = sock.get_link(name)
        if link is not None and not adopt:
            raise LinkExists(f"a network interface named {name} already exists on the host")
        if link is None:
            sock.add_bridge(name)
            link = sock.get_link(name)
            if link is None:
                raise BridgeError(f"bridge {name} vanished after creation")
        sock.add_addr(link.index, gateway, prefixlen, replace_ok=True)
        sock.set_link(link.index, up=True)


async def create(name: str, gateway: str, prefixlen: int, adopt: bool = False) -> None:
    """The bridge, up, with the gateway address. `adopt` (berthd restarting with its networks)
    keeps an existing one and gives it the address again; otherwise an existing link of that
    name is refused, so a network can never claim (and on removal delete) a host interface."""
    try:
        await asyncio.to_thread(_create, name, gateway, prefixlen, adopt)
    except OSError as exc:
        raise BridgeError(f"bridge {name}: {exc.strerror or exc}") from None


def _exists(name: str) -> bool:
    with nl.Netlink() as sock:
        return sock.get_link(name) is not None


async def exists(name: str) -> bool:
    """Whether the host has a link of that name (a network may not name one as its bridge)."""
    try:
        return await asyncio.to_thread(_exists, name)
    except OSError as exc:
        raise BridgeError(f"link {name}: {exc.strerror or exc}") from None


def _delete(name: str) -> None:
    with nl.Netlink() as sock:
        link = sock.get_link(name)
        if link is not None:
            sock.del_link(link.index)


async def delete(name: str) -> None:
    """Gone already is fine: a removal may be retried after a crash."""
    try:
        await asyncio.to_thread(_delete, name)
    except OSError as exc:
        raise BridgeError(f"bridge {name}: {exc.strerror or exc}") from None


def _routed() -> list[ipaddress.IPv4Network]:
    with nl.Netlink() as sock:
        return [ipaddress.IPv4Network(f"{dst}/{plen}", strict=False)
                for dst, plen, _gw, _oif in sock.routes() if dst and plen]


async def routed() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes (main table), default route excluded."""
    return await asyncio.to_thread(_routed)
