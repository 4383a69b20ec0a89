"""GET /containers/json (`docker ps`): filters, and rows rendered once per record write.

A row is JSON text in three parts. State and Status (the clock moves "Up 5 minutes", the
monitor moves the state) are rendered on every request; the keys before and after them read
only the container's record, its pod's record (attachments) and the networks table, so their
text is kept until one of those changes: the store replaces a record's object on every write
(`Table.peek`'s identity) and bumps the networks table's generation. Only the engine writes
those records, so the kept text is exactly what a fresh render would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from dockerapi import inspect, mounts
from dockerapi.http import Route, filters, front, qbool, qint
from dockerapi.model import Front
from engine.errors import InvalidArgument
from engine.store import DOCKER, ContainerRecord, PodRecord
from runtime.monitor.state import ContainerState

FILTERS = ("status", "label", "name", "id", "ancestor", "exited", "before", "since",
           "network", "health", "volume", "expose", "publish", "is-task")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
# compact, as dockerd writes; one encoder, not one per call as json.dumps(separators=) makes
_dumps = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class Row:
    """A container's row text outside State and Status, and what it was rendered from."""

    rec: ContainerRecord
    pod: PodRecord | None
    networks: int  # the networks table's generation
    head: str  # '{"Id":...,"Labels":{...},'
    tail: str  # ',"HostConfig":...,"Mounts":[...]}'


def _row(f: Front, rec: ContainerRecord, st: ContainerState | None, status: str) -> str:
    pod = f.ctx.store.pods.peek(rec.pod_id)
    gen = f.ctx.store.networks.generation
    kept = f.ps_rows.get(rec.id)
    if kept is None or kept.rec is not rec or kept.pod is not pod or kept.networks != gen:
        kept = Row(rec, pod, gen, _dumps(inspect.row_head(rec))[:-1] + ",",
                   "," + _dumps(inspect.row_tail(f, rec))[1:])
        f.ps_rows[rec.id] = kept
    line = inspect.row_status(f, rec, st, status)
    return f'{kept.head}"State":{_dumps(status)},"Status":{_dumps(line)}{kept.tail}'


def _keep(f: Front, rec: ContainerRecord, st: ContainerState | None, status: str,
          flt: dict[str, list[str]]) -> bool:
    for key, wanted in flt.items():
        if key == "status" and status not in wanted:
            return False
        if key == "name" and not any(w.lstrip("/") in rec.name for w in wanted):
            return False
        if key == "id" and not any(rec.id.startswith(w) for w in wanted):
            return False
        if key == "label" and not all(_label(rec.labels, w) for w in wanted):
            return False
        if key == "health" and (f.health[rec.id].status if rec.id in f.health
                                else "none") not in wanted:
            return False
        if key == "exited" and not (st and st.status == "stopped"
                                    and str(st.exit_code) in wanted):
            return False
        if key == "volume" and not any(m.get("Name") in wanted or m["Destination"] in wanted
                                       for m in mounts.describe(rec)):
            return False
        if key == "ancestor":
            img = f.ctx.images.get
            if not any((i := img(w)) is not None and i.id == rec.image_id or w == rec.image
                       for w in wanted):
                return False
    return True


def _label(labels: dict[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


async def list_(request: web.Request) -> web.StreamResponse:
    f = front(request)
    flt = filters(request, FILTERS)
    for s in flt.get("status", []):
        if s not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={s[:50]}'")
    show_all = qbool(request, "all")
    limit = qint(request, "limit", -1) or -1
    recs = sorted(f.ctx.store.containers.owned(DOCKER), key=lambda r: r.created_ns,
                  reverse=True)
    for gone in f.ps_rows.keys() - {r.id for r in recs}:
        del f.ps_rows[gone]
    out: list[str] = []
    for rec in recs:
        if limit > 0 and len(out) >= limit:
            break
        st, status = inspect.state(f, rec)
        if not show_all and limit <= 0 and status not in ("running", "paused") \
                and "status" not in flt:
            continue
        if not flt or _keep(f, rec, st, status, flt):
            out.append(_row(f, rec, st, status))
    return web.Response(text=f"[{','.join(out)}]", content_type="application/json")


ROUTES: list[Route] = [("GET", "/containers/json", list_)]
