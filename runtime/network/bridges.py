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
from dataclasses import dataclass

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
            sock.add_bridge(name, mac=nl.random_mac())
            link = sock.get_link(name)
            if link is None:
                raise BridgeError(f"bridge {name} vanished after creation")
        sock.add_addr(link.index, gateway, prefixlen, replace_ok=True)
        # an adopted bridge keeps the address it has now: one made before bridges got a MAC of
        # their own would otherwise still follow its ports (00:... with none left)
        pin = (link.mac if link.mac.strip("0:") else nl.random_mac()) if adopt else ""
        sock.set_link(link.index, up=True, mac=pin)


async def create(name: str, gateway: str, prefixlen: int, adopt: bool = False) -> None:
    """The bridge, up, with the gateway address and a MAC that stays (a bridge's otherwise
    follows its lowest port's, and members lose the gateway for seconds each time it moves;
    dockerd gives its bridges a random one too). `adopt` (berthd restarting with its networks)
    keeps an existing one and gives it the address again; otherwise an existing link of that
    name is refused, so a network can never claim (and on removal delete) a host interface."""
    try:
        await asyncio.to_thread(_create, name, gateway, prefixlen, adopt)
    except OSError as exc:
        raise BridgeError(f"bridge {name}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class HostView:
    """What a network create checks against the host: one netlink socket, one worker hop."""

    has_link: bool  # a link of the new bridge's name exists (a network may not name one)
    routes: list[ipaddress.IPv4Network]  # every IPv4 destination routed, default excluded


def _survey(name: str, with_routes: bool) -> HostView:
    with nl.Netlink() as sock:
        has_link = sock.get_link(name) is not None
        routes = [ipaddress.IPv4Network(f"{dst}/{plen}", strict=False)
                  for dst, plen, _gw, _oif in sock.routes() if dst and plen] \
            if with_routes else []
    return HostView(has_link, routes)


async def survey(name: str, with_routes: bool) -> HostView:
    """Whether link `name` exists and, when asked (a subnet to pick), the host's routes."""
    try:
        return await asyncio.to_thread(_survey, name, with_routes)
    except OSError as exc:
        raise BridgeError(f"reading the host's links and routes: {exc.strerror or exc}") \
            from None


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
