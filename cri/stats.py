"""CRI stats and metrics RPCs, from the same sampler and metric families as /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from cri.context import Context
from cri.filters import id_match, labels_match
from cri.grpccall import RpcContext
from cri.metrics import FAMILIES, Point, container_points, pod_points
from cri.samples import ContainerSample, PodSample, Sampler, pod_processes
from engine.store import K8S, ContainerRecord, PodRecord
from proto import api_pb2 as pb
from runtime.cgroups import CgroupStats

STREAM_BATCH = 500


def _u64(value: int) -> pb.UInt64Value:
    return pb.UInt64Value(value=max(int(value), 0))


def _psi(cg: CgroupStats, resource: str) -> pb.PsiStats | None:
    """cgroup v2 pressure of one resource; the kernel's totals are µs, CRI's are ns."""
    lines = (cg.psi or {}).get(resource)
    if not lines:
        return None
    out = pb.PsiStats()
    for kind, data in (("some", out.Some), ("full", out.Full)):
        if kind in lines:
            d = lines[kind]
            data.Total = int(d.get("total", 0)) * 1000
            data.Avg10, data.Avg60, data.Avg300 = d["avg10"], d["avg60"], d["avg300"]
    return out


def container_stats(c: ContainerSample, fs_mount: str) -> pb.ContainerStats:
    """cpu and memory only while the cgroup exists; the writable layer always, stamped with
    the time of the background walk it comes from."""
    ts = c.taken_ns
    out = pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=c.rec.id, metadata=c.cfg.metadata,
                                          labels=c.rec.labels, annotations=c.rec.annotations),
        writable_layer=pb.FilesystemUsage(
            timestamp=c.fs_taken_ns or ts, fs_id=pb.FilesystemIdentifier(mountpoint=fs_mount),
            used_bytes=_u64(c.fs_bytes), inodes_used=_u64(c.fs_inodes)))
    cg = c.cg
    if cg is not None:
        out.cpu.CopyFrom(pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(cg.cpu_usage_ns)))
        if c.nano_cores is not None:
            out.cpu.usage_nano_cores.value = c.nano_cores
        available = max(cg.memory_limit - cg.memory_working_set, 0) if cg.memory_limit else 0
        out.memory.CopyFrom(pb.MemoryUsage(
            timestamp=ts, working_set_bytes=_u64(cg.memory_working_set),
            available_bytes=_u64(available), usage_bytes=_u64(cg.memory_usage),
            rss_bytes=_u64(cg.memory_rss), page_faults=_u64(c.page_faults),
            major_page_faults=_u64(c.major_page_faults)))
        for resource, usage in (("cpu", out.cpu), ("memory", out.memory), ("io", out.io)):
            psi = _psi(cg, resource)
            if psi is not None:
                usage.psi.CopyFrom(psi)
        if out.HasField("io"):
            out.io.timestamp = ts
    return out


def pod_stats(pod: PodSample, fs_mount: str) -> pb.PodSandboxStats:
    """Pod cpu/memory are the sums of its live containers (there is no pause container)."""
    ts = pod.taken_ns
    containers = [container_stats(c, fs_mount) for c in pod.containers]
    live = [c for c in containers if c.HasField("cpu")]
    linux = pb.LinuxPodSandboxStats(
        cpu=pb.CpuUsage(
            timestamp=ts,
            usage_core_nano_seconds=_u64(sum(c.cpu.usage_core_nano_seconds.value for c in live)),
            usage_nano_cores=_u64(sum(c.cpu.usage_nano_cores.value for c in live))),
        memory=pb.MemoryUsage(
            timestamp=ts,
            working_set_bytes=_u64(sum(c.memory.working_set_bytes.value for c in live)),
            available_bytes=_u64(sum(c.memory.available_bytes.value for c in live)),
            usage_bytes=_u64(sum(c.memory.usage_bytes.value for c in live)),
            rss_bytes=_u64(sum(c.memory.rss_bytes.value for c in live)),
            page_faults=_u64(sum(c.memory.page_faults.value for c in live)),
            major_page_faults=_u64(sum(c.memory.major_page_faults.value for c in live))),
        process=pb.ProcessUsage(timestamp=ts, process_count=_u64(pod_processes(pod))),
        containers=containers)
    if pod.interfaces is not None:
        ifaces = [pb.NetworkInterfaceUsage(name=i.name, rx_bytes=_u64(i.rx_bytes),
                                           rx_errors=_u64(i.rx_errors), tx_bytes=_u64(i.tx_bytes),
                                           tx_errors=_u64(i.tx_errors))
                  for i in pod.interfaces]
        default = next((i for i in ifaces if i.name == "eth0"), ifaces[0] if ifaces else None)
        linux.network.CopyFrom(pb.NetworkUsage(timestamp=ts, default_interface=default,
                                               interfaces=ifaces))
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(id=pod.rec.id, metadata=pod.cfg.metadata,
                                           labels=pod.rec.labels,
                                           annotations=pod.rec.annotations),
        linux=linux)


def to_metrics(points: list[Point], ts: int) -> list[pb.Metric]:
    """CRI carries values as uint64: fractional seconds are truncated."""
    return [pb.Metric(name=name, timestamp=ts, label_values=list(labels + extra),
                      metric_type=pb.COUNTER if FAMILIES[name].kind == "counter" else pb.GAUGE,
                      value=_u64(int(value)))
            for name, labels, extra, value in points]


def pod_metrics(pod: PodSample, fs_mount: str) -> pb.PodSandboxMetrics:
    return pb.PodSandboxMetrics(
        pod_sandbox_id=pod.rec.id, metrics=to_metrics(pod_points(pod), pod.taken_ns),
        container_metrics=[pb.ContainerMetrics(
            container_id=c.rec.id,
            metrics=to_metrics(container_points(pod, c, fs_mount), c.taken_ns))
            for c in pod.containers])


T = TypeVar("T")


def _batches(items: list[T]) -> list[list[T]]:
    return [items[i:i + STREAM_BATCH] for i in range(0, len(items), STREAM_BATCH)]


@dataclass
class _Answer:
    """One unfiltered list answer, serialised, for the tables' state it was sampled in."""

    key: tuple[int, int, int]  # generations of the containers, pods and states tables
    started: float  # monotonic time its sampling began, so its age is never understated
    wire: asyncio.Future[bytes]


class StatsRPCs:
    """cpu, memory and processes are read from cgroup files at the call (an unfiltered list
    answer is reused for up to `stats.list_max_age`, see `_reused`), and the answer is built in
    the same worker thread; writable-layer usage comes from the background scanner
    (`samples.layer_usage`)."""

    ctx: Context
    _stats_sampler: Sampler | None = None
    _answers: dict[str, _Answer] | None = None
    if TYPE_CHECKING:  # provided by ContainerRPCs and SandboxRPCs in the composed servicer
        def container(self, given: str) -> ContainerRecord: ...
        def pod(self, given: str) -> PodRecord: ...

    @property
    def sampler(self) -> Sampler:
        if self._stats_sampler is None:
            self._stats_sampler = Sampler(self.ctx)
        return self._stats_sampler

    def _container_ids(self, f: pb.ContainerStatsFilter) -> set[str]:
        return {r.id for r in self.ctx.store.containers.owned(K8S)
                if id_match(f.id, r.id) and id_match(f.pod_sandbox_id, r.pod_id)
                and labels_match(f.label_selector, r.labels)}

    async def _container_stats(self, f: pb.ContainerStatsFilter) -> list[pb.ContainerStats]:
        """Sampled and built in the sampler's worker thread; the loop only sends them."""
        ids = self._container_ids(f)
        fs_mount = self.sampler.fs_mount
        if not ids:
            return []
        return await self.sampler.collect(
            lambda pods: [container_stats(c, fs_mount) for p in pods for c in p.containers],
            container_ids=ids, network=False)

    async def _pod_stats(self, f: pb.PodSandboxStatsFilter | None) -> list[pb.PodSandboxStats]:
        fs_mount = self.sampler.fs_mount
        ids = None if f is None else {
            r.id for r in self.ctx.store.pods.owned(K8S)
            if id_match(f.id, r.id) and labels_match(f.label_selector, r.labels)}
        if ids is not None and not ids:
            return []
        return await self.sampler.collect(lambda pods: [pod_stats(p, fs_mount) for p in pods],
                                          pod_ids=ids)

    async def _reused(self, kind: str, make: Callable[[], Awaitable[bytes]]) -> bytes:
        """An unfiltered list answer, made again only when it is `stats.list_max_age` old or a
        pod, container or state changed since; calls that come while one is being made share
        it. A stats-hungry client then costs the loop one lookup per call instead of keeping
        a worker thread (and with it the GIL) busy, and kubelet's calls still get figures at
        most that old, each with the time it was read."""
        if self._answers is None:
            self._answers = {}
        st, store = self.ctx.states, self.ctx.store
        key = (store.containers.generation, store.pods.generation, st.generation)
        now = time.monotonic()
        hit = self._answers.get(kind)
        failed = hit is not None and hit.wire.done() and (hit.wire.cancelled()
                                                          or hit.wire.exception() is not None)
        if (hit is None or failed or hit.key != key
                or now - hit.started >= self.ctx.config.stats.list_max_age):
            hit = self._answers[kind] = _Answer(key, now, asyncio.ensure_future(make()))
        return await asyncio.shield(hit.wire)

    async def ContainerStats(self, request: pb.ContainerStatsRequest,
                             context: RpcContext) -> pb.ContainerStatsResponse:
        rec = self.container(request.container_id)
        stats = await self._container_stats(pb.ContainerStatsFilter(id=rec.id))
        return pb.ContainerStatsResponse(stats=stats[0] if stats else None)

    async def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                                 context: RpcContext
                                 ) -> pb.ListContainerStatsResponse | bytes:
        if request.filter.ListFields():
            return pb.ListContainerStatsResponse(
                stats=await self._container_stats(request.filter))
        return await self._reused("containers", self._all_container_stats)

    async def _all_container_stats(self) -> bytes:
        fs_mount = self.sampler.fs_mount
        return await self.sampler.collect(
            lambda pods: pb.ListContainerStatsResponse(stats=[
                container_stats(c, fs_mount) for p in pods for c in p.containers
            ]).SerializeToString(), network=False)

    async def StreamContainerStats(self, request: pb.StreamContainerStatsRequest,
                                   context: RpcContext
                                   ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        for batch in _batches(await self._container_stats(request.filter)):
            yield pb.StreamContainerStatsResponse(container_stats=batch)

    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                              context: RpcContext) -> pb.PodSandboxStatsResponse:
        rec = self.pod(request.pod_sandbox_id)
        stats = await self._pod_stats(pb.PodSandboxStatsFilter(id=rec.id))
        return pb.PodSandboxStatsResponse(stats=stats[0] if stats else None)

    async def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                                  context: RpcContext
                                  ) -> pb.ListPodSandboxStatsResponse | bytes:
        if request.filter.ListFields():
            return pb.ListPodSandboxStatsResponse(stats=await self._pod_stats(request.filter))
        return await self._reused("pods", self._all_pod_stats)

    async def _all_pod_stats(self) -> bytes:
        fs_mount = self.sampler.fs_mount
        return await self.sampler.collect(
            lambda pods: pb.ListPodSandboxStatsResponse(
                stats=[pod_stats(p, fs_mount) for p in pods]).SerializeToString())

    async def StreamPodSandboxStats(self, request: pb.StreamPodSandboxStatsRequest,
                                    context: RpcContext
                                    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        for batch in _batches(await self._pod_stats(request.filter)):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch)

    async def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest,
                                    context: RpcContext
                                    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=[
            pb.MetricDescriptor(name=f.name, help=f.help, label_keys=list(f.label_keys))
            for f in FAMILIES.values()])

    async def _pod_metrics(self) -> list[pb.PodSandboxMetrics]:
        fs_mount = self.sampler.fs_mount
        return await self.sampler.collect(lambda pods: [pod_metrics(p, fs_mount) for p in pods])

    async def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest,
                                    context: RpcContext
                                    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=await self._pod_metrics())

    async def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest,
                                      context: RpcContext
                                      ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        for batch in _batches(await self._pod_metrics()):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch)
