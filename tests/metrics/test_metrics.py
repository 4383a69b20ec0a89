"""/metrics, /healthz and the CRI stats RPCs against a pod burning CPU and holding memory."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fixtures._proc import wait_until
from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.waits import until
from tests.metrics.prom import Sample, find, one, parse, scrape, scrape_text

pytestmark = pytest.mark.timeout(180)

CADVISOR_LABELS = {"container", "id", "image", "name", "namespace", "pod"}
HOLD_MB = 50
QUOTA = 10000  # 10% of a core
BURN = ["sh", "-c", "while :; do :; done"]
HOLD = ["sh", "-c", f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={HOLD_MB} && sleep 600"]
OOM = ["sh", "-c", 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}']


@dataclass
class Pod:
    cli: CriClient
    id: str
    config: Any
    image: str

    def start(self, name: str, command: list[str], **resources: int) -> str:
        pb = self.cli.pb
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=self.image), command=command,
                                 log_path=f"{name}.log")
        for key, value in resources.items():
            setattr(cfg.linux.resources, key, value)
        req = pb.CreateContainerRequest(pod_sandbox_id=self.id, config=cfg,
                                        sandbox_config=self.config)
        cid = str(self.cli.runtime.CreateContainer(req, timeout=60).container_id)
        self.cli.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def state(self, cid: str) -> Any:
        pb = self.cli.pb
        return self.cli.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=10).status


@pytest.fixture(scope="module")
def pod(metrics_berthd: Berthd, e2e_images: dict[str, Any], tmp_path_factory: Any) -> Iterator[Pod]:
    cli = metrics_berthd.client()
    pb = cli.pb
    image = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
    cfg = sandbox_config(cli, "metrics-pod", str(tmp_path_factory.mktemp("logs")))
    resp = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
    pod_id = resp.pod_sandbox_id
    p = Pod(cli, pod_id, cfg, image)
    yield p
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)


@pytest.fixture(scope="module")
def workload(pod: Pod, metrics_berthd: Berthd) -> dict[str, str]:
    """A CPU burner and a holder whose working set has reached HOLD_MB."""
    ids = {"burn": pod.start("burn", BURN), "hold": pod.start("hold", HOLD),
           "capped": pod.start("capped", BURN, cpu_quota=QUOTA, cpu_period=100000)}
    url = metrics_berthd.metrics_url  # type: ignore[attr-defined]

    def held() -> bool:
        ws = find(scrape(url), "container_memory_working_set_bytes", name=ids["hold"])
        return bool(ws) and ws[0].value >= HOLD_MB * 2**20
    wait_until(held, 30, "memory holder to fill /dev/shm")
    return ids


def test_cpu_seconds_grow_and_working_set_matches(workload: dict[str, str],
                                                  metrics_berthd: Berthd) -> None:
    url = metrics_berthd.metrics_url  # type: ignore[attr-defined]
    burn = {"name": workload["burn"], "cpu": "total"}
    first = one(scrape(url), "container_cpu_usage_seconds_total", **burn)

    def risen() -> list[Sample] | None:
        """The scrape once the burner has used 0.05 s more CPU: the machine is shared with
        other test runs, so demand a clear rise, not a full core."""
        got = scrape(url)
        return got if one(got, "container_cpu_usage_seconds_total", **burn) - first > 0.05 \
            else None

    time.sleep(1.0)
    after = until(risen, 10, 0.5, "a 0.05 s rise in the burner's CPU")
    ws = one(after, "container_memory_working_set_bytes", name=workload["hold"])
    assert HOLD_MB * 2**20 <= ws <= (HOLD_MB + 30) * 2**20
    assert one(after, "container_memory_usage_bytes", name=workload["hold"]) >= ws
    assert one(after, "container_processes", name=workload["burn"]) >= 1
    assert one(after, "container_start_time_seconds", name=workload["burn"]) > time.time() - 600
    assert one(after, "container_spec_cpu_quota", name=workload["capped"]) == QUOTA
    assert one(after, "container_cpu_cfs_throttled_periods_total", name=workload["capped"]) > 0
    assert not find(after, "container_spec_cpu_quota", name=workload["burn"])


def test_label_sets_match_cadvisor(workload: dict[str, str], metrics_berthd: Berthd,
                                   pod: Pod) -> None:
    samples = scrape(metrics_berthd.metrics_url)  # type: ignore[attr-defined]
    extra = {"container_cpu_usage_seconds_total": {"cpu"},
             "container_fs_usage_bytes": {"device"}}
    mine = [s for s in samples if s.name.startswith("container_")
            and s.labels.get("pod") == "metrics-pod"]
    assert mine
    for s in mine:
        want = CADVISOR_LABELS | extra.get(s.name, set())
        if s.name.startswith("container_network_"):
            want = CADVISOR_LABELS | {"interface"}
        assert set(s.labels) == want, s
    hold = find(samples, "container_memory_rss", name=workload["hold"])[0].labels
    assert hold["container"] == "hold" and hold["namespace"] == "critest"
    assert hold["image"] == pod.image and hold["id"].endswith("/" + workload["hold"])
    nets = find(samples, "container_network_receive_bytes_total", pod="metrics-pod")
    assert {s.labels["interface"] for s in nets} == {"eth0"}
    assert all(s.labels["container"] == "" for s in nets)


def test_cri_metrics_and_stats_agree_with_scrape(workload: dict[str, str], pod: Pod,
                                                 metrics_berthd: Berthd) -> None:
    pb = pod.cli.pb
    rt = pod.cli.runtime
    descs = rt.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(), timeout=10).descriptors
    by_name = {d.name: list(d.label_keys) for d in descs}
    assert by_name["container_memory_working_set_bytes"] == sorted(CADVISOR_LABELS)
    scraped, types = parse(scrape_text(metrics_berthd.metrics_url))  # type: ignore[attr-defined]
    assert {s.name for s in scraped if s.name.startswith("container_")} <= set(by_name)
    kinds = {d.name: "counter" if d.name.endswith(("_total", "failcnt")) else "gauge"
             for d in descs}
    assert {n: t for n, t in types.items() if n.startswith("container_")} == {
        n: kinds[n] for n in types if n.startswith("container_")}

    resp = rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=10)
    mine = next(m for m in resp.pod_metrics if m.pod_sandbox_id == pod.id)
    cm = {c.container_id: {m.name: m for m in c.metrics} for c in mine.container_metrics}
    hold_ws = cm[workload["hold"]]["container_memory_working_set_bytes"]
    assert hold_ws.metric_type == pb.GAUGE
    keys = by_name["container_memory_working_set_bytes"]
    assert dict(zip(keys, hold_ws.label_values, strict=True))["name"] == workload["hold"]
    burn_cpu = cm[workload["burn"]]["container_cpu_usage_seconds_total"]
    assert burn_cpu.metric_type == pb.COUNTER

    stats = {c: rt.ContainerStats(pb.ContainerStatsRequest(container_id=c), timeout=10).stats
             for c in workload.values()}
    scraped_ws = one(scraped, "container_memory_working_set_bytes", name=workload["hold"])
    for ws in (hold_ws.value.value, stats[workload["hold"]].memory.working_set_bytes.value):
        assert abs(ws - scraped_ws) < 4 * 2**20, (ws, scraped_ws)
    cpu_s = stats[workload["burn"]].cpu.usage_core_nano_seconds.value / 1e9
    assert burn_cpu.value.value <= cpu_s < burn_cpu.value.value + 5
    assert stats[workload["hold"]].writable_layer.fs_id.mountpoint.endswith("/bundles")

    listed = rt.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=pod.id)), timeout=10).stats
    assert {s.attributes.id for s in listed} >= set(workload.values())
    psb = rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod.id), timeout=10).stats
    assert psb.linux.memory.working_set_bytes.value >= HOLD_MB * 2**20
    assert psb.linux.process.process_count.value >= 2
    assert psb.linux.network.default_interface.name == "eth0"
    time.sleep(1.1)
    again = rt.ContainerStats(pb.ContainerStatsRequest(container_id=workload["burn"]),
                              timeout=10).stats
    assert again.cpu.usage_nano_cores.value > 5 * 10**7  # a busy loop, on a shared machine
    streamed = [s for r in rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest(), timeout=10)
                for s in r.pod_sandbox_stats]
    assert pod.id in {s.attributes.id for s in streamed}


def test_network_counters_move(workload: dict[str, str], pod: Pod,
                               metrics_berthd: Berthd) -> None:
    """Ping the pod's gateway (the test bridge's own address) and watch eth0's counters."""
    pb = pod.cli.pb
    url = metrics_berthd.metrics_url  # type: ignore[attr-defined]
    status = pod.cli.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=10).status
    gateway = str(ipaddress.ip_interface(f"{status.network.ip}/24").network[1])
    lbl = {"pod": "metrics-pod", "interface": "eth0"}
    before = scrape(url)
    res = pod.cli.runtime.ExecSync(pb.ExecSyncRequest(
        container_id=workload["hold"], cmd=["ping", "-c", "3", "-i", "0.2", "-s", "1000", gateway],
        timeout=20), timeout=30)
    assert res.exit_code == 0, res.stderr
    after = scrape(url)
    for metric in ("container_network_transmit_bytes_total",
                   "container_network_receive_bytes_total"):
        grown = one(after, metric, **lbl) - one(before, metric, **lbl)
        assert grown >= 3 * 1000, f"{metric} grew by {grown}"


def test_oom_kill_counts(workload: dict[str, str], pod: Pod, metrics_berthd: Berthd) -> None:
    url = metrics_berthd.metrics_url  # type: ignore[attr-defined]
    before = one(scrape(url), "berth_oom_kills_total")
    cid = pod.start("oom", OOM, memory_limit_in_bytes=16 * 2**20)
    wait_until(lambda: pod.state(cid).state == pod.cli.pb.CONTAINER_EXITED, 60, "OOM kill")
    st = pod.state(cid)
    assert st.exit_code == 137 and st.reason == "OOMKilled", (st.exit_code, st.reason)
    after = scrape(url)
    assert one(after, "container_oom_events_total", name=cid) == 1
    assert one(after, "berth_oom_kills_total") == before + 1
    assert one(after, "container_oom_events_total", pod="metrics-pod", container="") >= 1


def test_own_metrics_and_healthz(workload: dict[str, str], metrics_berthd: Berthd) -> None:
    url = metrics_berthd.metrics_url  # type: ignore[attr-defined]
    samples = scrape(url)
    assert one(samples, "berth_cri_operations_total", method="RunPodSandbox", code="OK") >= 1
    assert one(samples, "berth_cri_operation_duration_seconds_count", method="StartContainer",
               code="OK") >= 2
    assert one(samples, "berth_pod_start_duration_seconds_count") >= 1
    assert one(samples, "berth_image_pull_duration_seconds_count", outcome="success") >= 1
    assert one(samples, "berth_image_pull_bytes_total") > 0
    assert one(samples, "berth_containers", state="CONTAINER_RUNNING") >= 2
    assert one(samples, "berth_pod_sandboxes", state="SANDBOX_READY") >= 1
    assert one(samples, "berth_monitor_restarts_total") == 0
    resp = httpx.get(f"{url}/healthz", timeout=5)
    assert resp.status_code == 200 and resp.json()["ready"] is True
    assert {c["type"] for c in resp.json()["conditions"]} == {"RuntimeReady", "NetworkReady"}
