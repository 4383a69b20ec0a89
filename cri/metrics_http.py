"""The metrics HTTP server: /metrics and /healthz on the daemon's own event loop.

It shares berthd's loop (aiohttp) rather than prometheus-client's thread server, so sampling
reads the metadata store from the thread that owns it.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cri.context import Context
from cri.metrics import BerthMetrics


def readiness(ctx: Context) -> tuple[bool, list[dict[str, object]]]:
    """The same conditions CRI Status reports."""
    conds = []
    for kind, (ok, reason, message) in (("RuntimeReady", ctx.runtime_ready()),
                                        ("NetworkReady", ctx.network_ready())):
        conds.append({"type": kind, "status": ok, "reason": reason, "message": message})
    return all(c["status"] for c in conds), conds


class MetricsServer:
    """Bound by start(), released by stop()."""

    def __init__(self, ctx: Context, metrics: BerthMetrics, address: str) -> None:
        self.ctx, self.metrics = ctx, metrics
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self.runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, conds = readiness(self.ctx)
        return web.Response(status=200 if ok else 503, content_type="application/json",
                            text=json.dumps({"ready": ok, "conditions": conds}))
