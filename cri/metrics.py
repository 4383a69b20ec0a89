"""Prometheus metrics: cAdvisor-named container families sampled at scrape time, plus Berth's own.

The same `pod_points()`/`container_points()` feed /metrics and CRI ListPodSandboxMetrics, so
both always agree.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cri.container_status import cri_state
from cri.context import Context
from cri.loopwatch import LoopWatch
from cri.samples import ContainerSample, PodSample, Sampler, pod_processes

BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30, 60, 120)
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    kind: str  # "counter" or "gauge"
    extra: tuple[str, ...] = ()

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra


FAMILIES = {f.name: f for f in (
    Family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.",
           "counter", ("cpu",)),
    Family("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.",
           "counter"),
    Family("container_cpu_system_seconds_total",
           "Cumulative system cpu time consumed in seconds.", "counter"),
    Family("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.",
           "counter"),
    Family("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.",
           "counter"),
    Family("container_cpu_cfs_throttled_seconds_total",
           "Total time duration the container has been throttled.", "counter"),
    Family("container_memory_usage_bytes", "Current memory usage in bytes, including all memory "
           "regardless of when it was accessed", "gauge"),
    Family("container_memory_working_set_bytes", "Current working set in bytes.", "gauge"),
    Family("container_memory_rss", "Size of RSS in bytes.", "gauge"),
    Family("container_memory_cache", "Number of bytes of page cache memory.", "gauge"),
    Family("container_memory_failcnt", "Number of memory usage hits limits", "counter"),
    Family("container_oom_events_total", "Count of out of memory events observed for the "
           "container", "counter"),
    Family("container_fs_usage_bytes", "Number of bytes that are consumed by the container on "
           "this filesystem.", "gauge", ("device",)),
    Family("container_network_receive_bytes_total", "Cumulative count of bytes received",
           "counter", ("interface",)),
    Family("container_network_receive_errors_total",
           "Cumulative count of errors encountered while receiving", "counter", ("interface",)),
    Family("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted",
           "counter", ("interface",)),
    Family("container_network_transmit_errors_total",
           "Cumulative count of errors encountered while transmitting", "counter",
           ("interface",)),
    Family("container_processes", "Number of processes running inside the container.",
           "gauge"),
    Family("container_start_time_seconds", "Start time of the container since unix epoch in "
           "seconds.", "gauge"),
    Family("container_spec_memory_limit_bytes", "Memory limit for the container.", "gauge"),
    Family("container_spec_cpu_quota", "CPU quota of the container.", "gauge"),
    Family("container_spec_cpu_period", "CPU period of the container.", "gauge"),
    Family("container_spec_cpu_shares", "CPU share of the container.", "gauge"),
    *(Family(f"container_pressure_{res}_{name}_seconds_total",
             f"Total time duration {who} due to {res.upper() if res != 'memory' else res} "
             "congestion.", "counter")
      for res in ("cpu", "memory", "io")
      for name, who in (("stalled", "no tasks in the container could make progress"),
                        ("waiting", "tasks in the container have waited"))),
)}
PSI_KIND = {"stalled": "full", "waiting": "some"}  # cAdvisor's names for the kernel's lines

Point = tuple[str, tuple[str, ...], tuple[str, ...], float]  # family, labels, extra, value


def container_labels(pod: PodSample, c: ContainerSample) -> tuple[str, ...]:
    """cAdvisor's: id is the cgroup path, name the runtime's container id."""
    return (c.cfg.metadata.name, "/" + c.cgroup, c.rec.image, c.rec.id,
            pod.cfg.metadata.namespace, pod.cfg.metadata.name)


def pod_cgroup(pod: PodSample) -> str:
    """kubelet's per-pod parent, or a per-pod name under Berth's shared default parent."""
    parent = pod.cgroup_parent
    return "/" + (parent if parent != "berth" else f"berth/{pod.rec.id}")


def pod_labels(pod: PodSample) -> tuple[str, ...]:
    """The pod-level series, like cAdvisor's pod cgroup: container, image and name empty."""
    return ("", pod_cgroup(pod), "", "", pod.cfg.metadata.namespace, pod.cfg.metadata.name)


def container_points(pod: PodSample, c: ContainerSample, fs_device: str) -> list[Point]:
    """The container's series; an exited container keeps only its OOM count."""
    lbl = container_labels(pod, c)
    out: list[Point] = [("container_oom_events_total", lbl, (), c.oom_events)]
    cg = c.cg
    if cg is None:
        return out
    res = c.cfg.linux.resources
    started = c.state.started_ns if c.state and c.state.started_ns else c.rec.created_ns
    out += [
        ("container_cpu_usage_seconds_total", lbl, ("total",), cg.cpu_usage_ns / 1e9),
        ("container_cpu_user_seconds_total", lbl, (), cg.cpu_user_ns / 1e9),
        ("container_cpu_system_seconds_total", lbl, (), cg.cpu_system_ns / 1e9),
        ("container_memory_usage_bytes", lbl, (), cg.memory_usage),
        ("container_memory_working_set_bytes", lbl, (), cg.memory_working_set),
        ("container_memory_rss", lbl, (), cg.memory_rss),
        ("container_memory_cache", lbl, (), cg.memory_cache),
        ("container_memory_failcnt", lbl, (), cg.memory_failcnt),
        ("container_fs_usage_bytes", lbl, (fs_device,), c.fs_bytes),
        ("container_processes", lbl, (), cg.pids_current),
        ("container_start_time_seconds", lbl, (), started / 1e9),
        ("container_spec_memory_limit_bytes", lbl, (), cg.memory_limit or 0),
        ("container_spec_cpu_shares", lbl, (), res.cpu_shares or 1024),
    ]
    for resource, lines in (cg.psi or {}).items():  # cgroup v2 only: v1 has no per-cgroup PSI
        for name, kind in PSI_KIND.items():
            if kind in lines:
                out.append((f"container_pressure_{resource}_{name}_seconds_total", lbl, (),
                            lines[kind]["total"] / 1e6))
    if res.cpu_quota > 0:  # cAdvisor emits the CFS families only for a container with a quota
        out += [
            ("container_spec_cpu_quota", lbl, (), res.cpu_quota),
            ("container_spec_cpu_period", lbl, (), res.cpu_period or 100000),
            ("container_cpu_cfs_periods_total", lbl, (), cg.cpu_periods),
            ("container_cpu_cfs_throttled_periods_total", lbl, (), cg.cpu_throttled_periods),
            ("container_cpu_cfs_throttled_seconds_total", lbl, (), cg.cpu_throttled_ns / 1e9),
        ]
    return out


def pod_points(pod: PodSample) -> list[Point]:
    """Pod totals (sums of its live containers) and the pod's network interfaces."""
    lbl = pod_labels(pod)
    live = [c.cg for c in pod.containers if c.cg is not None]
    out: list[Point] = [
        ("container_cpu_usage_seconds_total", lbl, ("total",),
         sum(s.cpu_usage_ns for s in live) / 1e9),
        ("container_memory_usage_bytes", lbl, (), sum(s.memory_usage for s in live)),
        ("container_memory_working_set_bytes", lbl, (), sum(s.memory_working_set for s in live)),
        ("container_memory_rss", lbl, (), sum(s.memory_rss for s in live)),
        ("container_oom_events_total", lbl, (), sum(c.oom_events for c in pod.containers)),
        ("container_processes", lbl, (), pod_processes(pod)),
        ("container_start_time_seconds", lbl, (), pod.rec.created_ns / 1e9),
    ]
    for i in pod.interfaces or []:
        out += [
            ("container_network_receive_bytes_total", lbl, (i.name,), i.rx_bytes),
            ("container_network_receive_errors_total", lbl, (i.name,), i.rx_errors),
            ("container_network_transmit_bytes_total", lbl, (i.name,), i.tx_bytes),
            ("container_network_transmit_errors_total", lbl, (i.name,), i.tx_errors),
        ]
    return out


def all_points(pods: list[PodSample], fs_device: str) -> list[Point]:
    out: list[Point] = []
    for pod in pods:
        out += pod_points(pod)
        for c in pod.containers:
            out += container_points(pod, c, fs_device)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def render(points: list[Point]) -> str:
    """Text exposition of the container families.

    Written here rather than through a prometheus-client collector: its per-sample label
    validation and escaping was half the scrape time at 100 containers. Label strings are
    built once per series set and reused across families.
    """
    by_family: dict[str, list[str]] = {}
    label_text: dict[tuple[str, ...], str] = {}
    for name, labels, extra, value in points:
        f = FAMILIES[name]
        text = label_text.get(labels)
        if text is None:
            text = label_text[labels] = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(BASE_LABELS, labels, strict=True))
        if extra:
            text += "," + ",".join(f'{k}="{_escape(v)}"'
                                   for k, v in zip(f.extra, extra, strict=True))
        by_family.setdefault(name, []).append(f"{name}{{{text}}} {_num(value)}\n")
    out = []
    for name, lines in by_family.items():
        f = FAMILIES[name]
        # typed as cAdvisor types them, container_memory_failcnt (a counter without the
        # _total suffix) included: prometheus-client would have renamed it
        out.append(f"# HELP {name} {f.help}\n# TYPE {name} {f.kind}\n")
        out.extend(lines)
    return "".join(out)


def state_lines(pods: list[PodSample]) -> str:
    """berth_containers and berth_pod_sandboxes gauges, by CRI state."""
    states = Tally(cri_state(c.state) for p in pods for c in p.containers)
    out = ["# HELP berth_containers Containers by CRI state.\n# TYPE berth_containers gauge\n"]
    for state in ("CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED",
                  "CONTAINER_UNKNOWN"):
        out.append(f'berth_containers{{state="{state}"}} {states.get(state, 0)}\n')
    pod_states = Tally(p.rec.state for p in pods)
    out.append("# HELP berth_pod_sandboxes Pod sandboxes by CRI state.\n"
               "# TYPE berth_pod_sandboxes gauge\n")
    for state in ("SANDBOX_READY", "SANDBOX_NOTREADY"):
        out.append(f'berth_pod_sandboxes{{state="{state}"}} {pod_states.get(state, 0)}\n')
    return "".join(out)


STALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class BerthMetrics:
    """Owns the registry; observers feed the counters, `scrape()` renders one exposition."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sampler = Sampler(ctx)
        self.registry = CollectorRegistry(auto_describe=False)
        self._oom_seen: dict[str, int] = {}
        self._oom_lock = threading.Lock()  # two scrapes render in two worker threads
        r = self.registry
        self.rpcs = Counter("berth_cri_operations", "CRI calls served, by method and gRPC code.",
                            ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("berth_cri_operation_duration_seconds",
                                     "CRI call latency, by method and gRPC code.",
                                     ["method", "code"], buckets=LATENCY_BUCKETS, registry=r)
        self.pod_start = Histogram("berth_pod_start_duration_seconds",
                                   "RunPodSandbox latency of successful pod starts.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.pull_bytes = Counter("berth_image_pull_bytes", "Bytes of images newly pulled.",
                                  registry=r)
        self.pull_seconds = Histogram("berth_image_pull_duration_seconds",
                                      "PullImage duration, by outcome.", ["outcome"],
                                      buckets=PULL_BUCKETS, registry=r)
        self.oom_kills = Counter("berth_oom_kills", "Containers seen OOM-killed.", registry=r)
        self.monitor_restarts = Counter("berth_monitor_restarts",
                                        "Times berthd had to start the container monitor again.",
                                        registry=r)
        self.scrape_seconds = Histogram("berth_metrics_scrape_duration_seconds",
                                        "Time to sample and render the container families.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        stalls = Histogram("berth_event_loop_stall_cpu_seconds",
                           "CPU the event-loop thread spent while one loop ping waited (pinged "
                           "only while it is busy); above 0.05 a handler blocked the loop.",
                           buckets=STALL_BUCKETS, registry=r)
        self.loop_watch = LoopWatch(asyncio.get_running_loop(), stalls.observe)
        Gauge("berth_event_loop_lag_max_seconds", "Longest wait of a loop ping so far "
              "(includes time the process was not scheduled).",
              registry=r).set_function(lambda: self.loop_watch.max_lag)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """RpcInterceptor observer."""
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method, code).observe(seconds)
        if method == "RunPodSandbox" and code == "OK":
            self.pod_start.observe(seconds)

    def observe_pull(self, ref: str, new_bytes: int, seconds: float, ok: bool) -> None:
        """PullImage observer: only bytes the pull actually added count."""
        self.pull_seconds.labels("success" if ok else "failure").observe(seconds)
        if ok and new_bytes:
            self.pull_bytes.inc(new_bytes)

    def watch_monitor_restarts(self) -> None:
        """Count the monitor client's relaunches by wrapping its relaunch hook."""
        client: Any = self.ctx.monitor
        inner = getattr(client, "_relaunch", None)
        if inner is None:
            return

        async def relaunch() -> object:
            self.monitor_restarts.inc()
            return await inner()

        client._relaunch = relaunch

    def note_ooms(self, pods: list[PodSample]) -> None:
        """Turn per-container OOM counts into one monotonic node counter."""
        seen: dict[str, int] = {}
        with self._oom_lock:
            for pod in pods:
                for c in pod.containers:
                    n = seen[c.rec.id] = c.oom_events
                    if n > self._oom_seen.get(c.rec.id, 0):
                        self.oom_kills.inc(n - self._oom_seen.get(c.rec.id, 0))
            self._oom_seen = seen

    def _render(self, pods: list[PodSample]) -> str:
        """Runs in the sampler's worker thread: rendering 100 containers stays off the loop."""
        self.note_ooms(pods)
        return render(all_points(pods, self.sampler.fs_mount)) + state_lines(pods)

    async def scrape(self) -> bytes:
        """Sample everything, then render: container families, states, then Berth's own."""
        started = time.perf_counter()
        text = await self.sampler.collect(self._render)
        self.scrape_seconds.observe(time.perf_counter() - started)
        # Berth's own families too: a latency histogram per RPC method is thousands of lines,
        # ~10 ms of rendering; prometheus_client's metrics lock themselves, so a thread renders
        return text.encode() + await asyncio.to_thread(generate_latest, self.registry)
