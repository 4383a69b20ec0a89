"""loopback plugin: bring `lo` up inside the pod netns."""

from __future__ import annotations

import errno
import os

from cni_plugins import nl, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _set_lo(netns: str, up: bool) -> None:
    with nl.in_netns(netns), nl.Netlink() as sock:
        link = sock.get_link("lo")
        if link is None:
            raise CNIError(skel.E_IO, "no lo in netns")
        sock.set_link(link.index, up=up)


def cmd_add(args: Args) -> dict[str, Any]:
    _set_lo(args.netns, True)
    return {
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": args.netns}],
        "ips": [
            {"address": "127.0.0.1/8", "interface": 0},
            {"address": "::1/128", "interface": 0},
        ],
    }


def cmd_del(args: Args) -> None:
    """A netns that is already gone took its lo with it, which is success."""
    if not args.netns or not os.path.exists(args.netns):
        return
    try:
        _set_lo(args.netns, False)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def cmd_check(args: Args) -> None:
    with nl.in_netns(args.netns), nl.Netlink() as sock:
        link = sock.get_link("lo")
        if link is None or not link.flags & nl.IFF_UP:
            raise CNIError(skel.E_UNKNOWN_CONTAINER, "lo is not up")


def main() -> int:
    return skel.run({"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check}, "loopback")
