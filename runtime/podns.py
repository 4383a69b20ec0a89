"""A pod's shared namespaces, pinned as bind mounts so no pause process has to hold them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Iterable
from pathlib import Path

from runtime import libc

# util-linux unshare flag per namespace kind (OCI names).
FLAGS = {"network": "--net", "ipc": "--ipc", "uts": "--uts"}


class PinError(Exception):
    """Creating a pod's namespaces failed; the message carries unshare's own words."""


# Runs inside the new namespaces: set the hostname, then write each sysctl (already validated
# by runtime.sysctl) through /proc/sys, which shows the writer's own net and ipc namespaces.
_SETUP = ('[ -n "$1" ] && hostname "$1"; shift; '
          'while [ $# -gt 0 ]; do printf %s "$2" > "/proc/sys/$1" || exit 1; shift 2; done')


def _sysctl_path(name: str) -> str:
    """net.ipv4.conf.eth0/1.rp_filter → net/ipv4/conf/eth0.1/rp_filter, as sysctl(8) maps it."""
    return "/".join(part.replace("/", ".") for part in name.split("."))


async def pin(directory: Path, kinds: Iterable[str], hostname: str = "",
              sysctls: dict[str, str] | None = None) -> dict[str, str]:
    """Create fresh namespaces in one helper process (berthd is threaded: it must not unshare).

    `unshare` bind-mounts each new namespace onto a file in `directory`; the helper then sets
    the hostname and sysctls inside them and exits. Returns kind → pinned path.
    """
    kinds = [k for k in kinds if k in FLAGS]
    if not kinds:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    paths = {k: directory / k for k in kinds}
    for p in paths.values():
        p.touch()
    argv = ["unshare", *(f"{FLAGS[k]}={p}" for k, p in paths.items()), "sh", "-c", _SETUP,
            "sh", hostname if "uts" in paths else ""]
    for name, value in (sysctls or {}).items():
        argv += [_sysctl_path(name), value]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        unpin(directory)
        raise PinError(f"creating pod namespaces failed: {err.decode(errors='replace').strip()}")
    return {k: str(p) for k, p in paths.items()}


def unpin(directory: Path) -> None:
    """Detach and delete every pin in `directory`; idempotent, so teardown can always run."""
    if not directory.exists():
        return
    for kind in FLAGS:
        path = directory / kind
        with contextlib.suppress(OSError):
            libc.umount2(str(path), libc.MNT_DETACH)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
    with contextlib.suppress(OSError):
        directory.rmdir()
