"""A Docker container's mounts: binds, named volumes and anonymous ones, as dockerd 20.10 makes
them.

The body's Binds and Mounts come first; every path of Config.Volumes and of the image's VOLUME
that they leave uncovered gets an anonymous volume (64-hex name). Named volumes are created on
first use. On create, each volume that is still empty takes the image's content at its path
(unless `nocopy`): the copy runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dockerapi.body import CreateBody
from engine.context import Context
from engine.store import ContainerRecord


@dataclass
class Planned:
    """One mount with its host path settled; `name` is the volume's (empty for a bind)."""

    kind: str  # "bind" or "volume"
    name: str
    source: str
    target: str
    readonly: bool
    mode: str
    nocopy: bool = False
    anonymous: bool = False
    labels: dict[str, str] | None = None


def plan(ctx: Context, body: CreateBody, image_volumes: list[str]) -> list[Planned]:
    """Every mount of the container, parents before children (as dockerd sorts them)."""
    out: list[Planned] = []
    for m in body.mounts:
        if m.kind == "bind":
            out.append(Planned("bind", "", m.source, m.target, m.readonly, m.mode))
            continue
        name = m.source or secrets.token_hex(32)
        out.append(Planned("volume", name, str(ctx.volumes.mountpoint(name)), m.target,
                           m.readonly, m.mode, m.nocopy, not m.source, m.labels or None))
    covered = {p.target for p in out}
    for path in [*body.volumes, *image_volumes]:
        target = os.path.normpath(os.path.join("/", path))  # an image's VOLUME may be relative
        if target in covered or target == "/":
            continue
        covered.add(target)
        name = secrets.token_hex(32)
        out.append(Planned("volume", name, str(ctx.volumes.mountpoint(name)), target, False,
                           "", anonymous=True))
    return sorted(out, key=lambda p: p.target.count("/"))


def create_volumes(ctx: Context, planned: list[Planned]) -> list[str]:
    """Make the volumes that do not exist yet; their names, for undo if the create fails."""
    made = []
    for p in planned:
        if p.kind == "volume" and ctx.store.volumes.get(p.name) is None:
            ctx.volumes.create(p.name, labels=p.labels, anonymous=p.anonymous)
            made.append(p.name)
    return made


async def drop_volumes(ctx: Context, names: list[str]) -> list[str]:
    """Remove those volumes no container uses any more (undo of a create, `rm -v`); the names
    of the removed."""
    gone = []
    for name in names:
        if ctx.store.volumes.get(name) is not None and not ctx.volume_users(name):
            await asyncio.to_thread(ctx.volumes.purge,
                                    ctx.volumes.remove(name, ctx.volume_users))
            gone.append(name)
    return gone


async def copy_up(ctx: Context, planned: list[Planned], rootfs: Path) -> None:
    """The image's content into each empty volume, in a thread (it walks and copies files)."""
    wanted = [(p.name, p.target) for p in planned if p.kind == "volume" and not p.nocopy]
    if wanted:
        await asyncio.to_thread(
            lambda: [ctx.volumes.copy_up(name, rootfs, target) for name, target in wanted])


def oci(planned: list[Planned]) -> list[dict[str, Any]]:
    """The OCI mounts: each a private recursive bind of its host path."""
    return [{"destination": p.target, "type": "bind", "source": p.source,
             "options": ["rbind", "rprivate"] + (["ro"] if p.readonly else [])}
            for p in planned]


def stored(planned: list[Planned]) -> list[dict[str, Any]]:
    """What the record keeps, for inspect and `rm -v`."""
    return [asdict(p) for p in planned]


def volume_names(planned: list[Planned]) -> list[str]:
    """The volumes a container uses: what `volume rm` checks (Context.volume_users)."""
    return [p.name for p in planned if p.kind == "volume"]


def anonymous(rec: ContainerRecord) -> list[str]:
    """The anonymous volumes of a container, which `rm -v` and AutoRemove take with it."""
    return [m["name"] for m in rec.extra.get("docker", {}).get("mounts", [])
            if m["kind"] == "volume" and m.get("anonymous")]


def describe(rec: ContainerRecord) -> list[dict[str, Any]]:
    """The container's Mounts as `docker inspect` shows them."""
    out = []
    for m in rec.extra.get("docker", {}).get("mounts", []):
        view: dict[str, Any] = {"Type": m["kind"]}
        if m["kind"] == "volume":
            view.update(Name=m["name"], Source=m["source"], Destination=m["target"],
                        Driver="local", Mode=m["mode"], RW=not m["readonly"], Propagation="")
        else:
            view.update(Source=m["source"], Destination=m["target"], Mode=m["mode"],
                        RW=not m["readonly"], Propagation="rprivate")
        out.append(view)
    return out
