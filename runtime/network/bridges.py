"""Linux bridges for user networks: made (with the gateway address) when the network is made,
so its DNS listener can bind before any container joins; deleted with the network.

One `ip -batch` process per change, off the event loop; routes are read the same way to keep a
new network's subnet off anything the host already routes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json


class BridgeError(Exception):
    """`ip` refused a change; the message is its own."""


async def _ip(args: list[str], stdin: str = "") -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode())
    if proc.returncode != 0:
        raise BridgeError(err.decode(errors="replace").strip() or f"ip {args[0]} failed")
    return out.decode()


async def create(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge, up, with the gateway address; an existing one (a reboot-less restart) is kept
    and given the address again."""
    if await exists(name):
        await _ip(["-batch", "-"], f"addr replace {gateway}/{prefixlen} dev {name}\n"
                                    f"link set {name} up\n")
        return
    await _ip(["-batch", "-"], f"link add {name} type bridge\n"
                                f"addr add {gateway}/{prefixlen} dev {name}\n"
                                f"link set {name} up\n")


async def exists(name: str) -> bool:
    try:
        await _ip(["-o", "link", "show", "dev", name])
    except BridgeError:
        return False
    return True


async def delete(name: str) -> None:
    """Gone already is fine: a removal may be retried after a crash."""
    if await exists(name):
        await _ip(["link", "del", name])


async def routed() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes (main table), default route excluded."""
    doc = json.loads(await _ip(["-j", "-4", "route", "show"]) or "[]")
    nets = []
    for r in doc:
        dst = r.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets
