"""GET /containers/{id}/stats: cgroup figures in Docker's JSON, one-shot or every second."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from aiohttp import web

from dockerapi import model
from dockerapi.http import Route, front, qbool
from dockerapi.inspect import iso
from engine import containers
from engine.errors import FailedPrecondition
from engine.store import ContainerRecord
from runtime.cgroups.model import CgroupStats

INTERVAL = 1.0  # s between streamed samples, as dockerd
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _system_ns() -> int:
    """All CPUs' time since boot, the denominator docker's CPU % uses."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:8]
    return sum(int(v) for v in fields) * TICK_NS


def _cpu(s: CgroupStats | None, system: int) -> dict[str, Any]:
    if s is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0}, "throttling_data": {
            "periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    return {"cpu_usage": {"total_usage": s.cpu_usage_ns, "usage_in_kernelmode": s.cpu_system_ns,
                          "usage_in_usermode": s.cpu_user_ns},
            "system_cpu_usage": system, "online_cpus": os.cpu_count() or 1,
            "throttling_data": {"periods": s.cpu_periods,
                                "throttled_periods": s.cpu_throttled_periods,
                                "throttled_time": s.cpu_throttled_ns}}


def _doc(rec: ContainerRecord, s: CgroupStats, sys_ns: int, prev: CgroupStats | None,
         prev_sys: int, prev_at: int) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "read": iso(now), "preread": iso(prev_at), "name": "/" + rec.name, "id": rec.id,
        "pids_stats": {"current": s.pids_current, **({"limit": s.pids_limit}
                                                     if s.pids_limit else {})},
        "cpu_stats": _cpu(s, sys_ns), "precpu_stats": _cpu(prev, prev_sys),
        "memory_stats": {"usage": s.memory_usage, "limit": s.memory_limit or
                         os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                         "failcnt": s.memory_failcnt,
                         "stats": {"cache": s.memory_cache, "rss": s.memory_rss,
                                   "total_inactive_file": max(
                                       0, s.memory_usage - s.memory_working_set),
                                   "pgfault": s.page_faults, "pgmajfault": s.major_page_faults}},
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None},
        "num_procs": 0, "storage_stats": {}, "networks": {}}


async def get(request: web.Request) -> web.StreamResponse:
    f = front(request)
    rec = model.container(f.ctx, request.match_info["id"])
    stream, one_shot = qbool(request, "stream", True), qbool(request, "one-shot")
    if not stream and not one_shot:  # dockerd waits a cycle so the CPU % has a base
        prev, prev_sys, prev_at = await _sample(rec, f), _system_ns(), time.time_ns()
        await asyncio.sleep(INTERVAL)
    else:
        prev, prev_sys, prev_at = None, 0, 0
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    first = True
    while True:
        try:
            s = await containers.usage(f.ctx, rec)
        except FailedPrecondition:
            if first:
                raise
            break
        sys_ns = _system_ns()
        if first:
            await resp.prepare(request)
            first = False
        await resp.write(json.dumps(_doc(rec, s, sys_ns, prev, prev_sys, prev_at)).encode()
                         + b"\n")
        if not stream:
            break
        prev, prev_sys, prev_at = s, sys_ns, time.time_ns()
        await asyncio.sleep(INTERVAL)
    return resp


async def _sample(rec: ContainerRecord, f: model.Front) -> CgroupStats:
    return await containers.usage(f.ctx, rec)


ROUTES: list[Route] = [("GET", "/containers/{id}/stats", get)]
