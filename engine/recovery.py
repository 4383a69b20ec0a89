"""Start-up reconciliation: after a crash every object is either fully there or fully gone."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import structlog

from engine.containers import CREATING
from engine.context import Context
from engine.pods import NOTREADY, READY, release_network
from engine.store import PodRecord
from runtime import containers as monitor
from runtime import podns, podpid
from runtime.bundle import Bundle

log = structlog.get_logger("recovery")


def _pinned(path: str) -> bool:
    """A pinned namespace is a bind mount of an nsfs file; a plain file means it was lost."""
    if not path:
        return False
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)


async def reconcile(ctx: Context) -> None:
    """Finish what a killed berthd left half-done, using the records as the source of truth.

    - A pod or container whose create never completed (no `extra` recorded, or a container
      still marked CREATING) is rolled back, with the anonymous volumes it had made.
    - A ready pod whose pinned network namespace is gone (a reboot) becomes NOTREADY, and its
      IP is released through the CNI result cache.
    - Monitor containers and bundle dirs that no record owns are removed.
    """
    store = ctx.store
    for pod in store.pods.find():
        if not pod.extra:
            log.warning("rolling back interrupted pod creation", pod=pod.id)
            await _release_network(ctx, pod)
            shutil.rmtree(ctx.pod_dir(pod.id), ignore_errors=True)
            store.pods.delete(pod.id)
        elif pod.state == READY and not pod.extra.get("host_network") and \
                not _pinned(pod.extra.get("ns", {}).get("network", "")):
            log.warning("pod lost its network namespace; marking it not ready", pod=pod.id)
            await _release_network(ctx, pod)
            pod.state = NOTREADY
            store.pods.put(pod)
    known = {p.id for p in store.pods.find()}
    for c in store.containers.find():
        if not c.extra or c.extra.get(CREATING) or c.pod_id not in known:
            log.warning("rolling back interrupted container creation", container=c.id)
            await _drop_container(ctx, c.id)
            store.containers.delete(c.id)
            if c.extra.get(CREATING):
                await _drop_anonymous(ctx, c.extra.get("volumes", []))
    owned = {c.id for c in store.containers.find()}
    for st in await ctx.monitor.list():
        if st.id not in owned:
            log.warning("removing container no record owns", container=st.id)
            await _drop_container(ctx, st.id)
    bundles = Path(ctx.config.state_dir) / "bundles"
    if bundles.exists():
        for d in bundles.iterdir():
            if d.name not in owned:
                await asyncio.to_thread(Bundle(d).remove)


async def _release_network(ctx: Context, pod: PodRecord) -> None:
    """CNI DEL (from the result cache when there is one) frees the IP; then drop the pins."""
    pod_id = pod.id
    try:
        await release_network(ctx, pod, str(ctx.ns_dir(pod_id) / "network"))
    except Exception as exc:  # logged, not fatal: RemovePodSandbox retries the DEL later
        log.warning("network teardown failed during recovery", pod=pod_id, error=str(exc))
    podpid.stop(ctx.ns_dir(pod_id))
    podns.unpin(ctx.ns_dir(pod_id))


async def _drop_anonymous(ctx: Context, names: list[str]) -> None:
    """The anonymous volumes an interrupted create made and no container uses."""
    for name in names:
        rec = ctx.store.volumes.get(name)
        if rec is not None and rec.extra.get("anonymous") and not ctx.volume_users(name):
            await asyncio.to_thread(ctx.volumes.purge, ctx.volumes.remove(name,
                                                                          ctx.volume_users))


async def _drop_container(ctx: Context, cid: str) -> None:
    with contextlib.suppress(monitor.NotFound, monitor.InvalidState):
        await ctx.monitor.stop(cid, timeout=0)
    with contextlib.suppress(monitor.NotFound):
        await ctx.monitor.delete(cid)
    await asyncio.to_thread(Bundle(ctx.bundle_dir(cid)).remove)
