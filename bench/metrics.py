"""The CRI benchmarks: each runs the same requests against both peers, interleaved."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc

from bench.env import Env, cpu_seconds, daemon_pids
from bench.harness import Peer, Plan, interleave, timed
from bench.pods import Pod, pod_cycle, pull, remove_pod, run_pod, start_container
from bench.stats import Row, percentile

Metric = Callable[[Env, Plan], list[Row]]


def lifecycle(env: Env, plan: Plan) -> list[Row]:
    """One loop of full pod cycles yields run, create+start and the whole cycle per pod."""
    logs = env.workdir / "logs"
    got: dict[str, dict[str, list[float]]] = {"berth": {}, "containerd": {}}

    def sample(peer: Peer) -> Callable[[], float]:
        def once() -> float:
            t = pod_cycle(peer, logs)
            for k, v in (("run", t.run), ("cs", t.create_start), ("sr", t.stop_remove),
                         ("cycle", t.cycle)):
                got[peer.name].setdefault(k, []).append(v)
            return t.cycle
        return once

    interleave(sample(env.berth), sample(env.ctrd), plan.n, plan.warmup)
    w = plan.warmup
    b, c = got["berth"], got["containerd"]
    return [
        Row("RunPodSandbox", "ms", b["run"][w:], c["run"][w:], 0.5),
        Row("CreateContainer+StartContainer", "ms", b["cs"][w:], c["cs"][w:], 0.5),
        Row("pod cycle: run, create, start, stop, remove", "ms", b["cycle"][w:],
            c["cycle"][w:], None, note="p50 of the stop+remove part: berth "
            f"{percentile(b['sr'][w:], 50):.0f} ms, "
            f"containerd {percentile(c['sr'][w:], 50):.0f} ms"),
    ]


def _sleeper_pod(peer: Peer, env: Env) -> Pod:
    pod = run_pod(peer, env.workdir / "logs")
    start_container(pod)
    return pod


def exec_sync(env: Env, plan: Plan) -> list[Row]:
    """ExecSync of `true` in a running container: the cost of every exec probe."""
    pods = [_sleeper_pod(p, env) for p in env.peers()]
    try:
        def sample(pod: Pod) -> Callable[[], float]:
            pb, rt = pod.peer.client.pb, pod.peer.client.runtime
            req = pb.ExecSyncRequest(container_id=pod.containers[0], cmd=["true"], timeout=10)
            return lambda: timed(lambda: rt.ExecSync(req, timeout=30))

        b, c = interleave(sample(pods[0]), sample(pods[1]), plan.n * 2, plan.warmup)
        rows = [Row("ExecSync `true`", "ms", b, c, 0.5)]
        rows.append(_exec_stream(pods, plan))
        return rows
    finally:
        for pod in pods:
            remove_pod(pod)


def _exec_stream(pods: list[Pod], plan: Plan) -> Row:
    from bench.streaming_bench import exec_roundtrip  # SPDY client: only this metric needs it

    for pod in pods:  # warm-up: first connection to the streaming server, first SPDY session
        exec_roundtrip(pod.peer.client.endpoint, pod.containers[0], 1)
    b: list[float] = []
    c: list[float] = []
    for _ in range(plan.rounds):  # interleave in blocks: each call sets up its own client
        for pod, out in ((pods[0], b), (pods[1], c)):
            out.extend(exec_roundtrip(pod.peer.client.endpoint, pod.containers[0], plan.block))
    return Row("exec round trip (streaming server, SPDY)", "ms", b, c, 0.5,
               note=f"Exec RPC + upgrade + `cat` echo + exit; {plan.rounds} blocks of "
               f"{plan.block} per peer, alternating")


def _layers(env: Env) -> list[str]:
    """Hex digests of the big image's layers (read from its OCI layout)."""
    lay = env.images["big"].layout
    blobs = lay / "blobs" / "sha256"
    index = json.loads((lay / "index.json").read_text())
    man = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    return [x["digest"][7:] for x in man["layers"]]


def _store(peer: Peer) -> tuple[Path, Path]:
    """(blob dir, snapshot dir) of the peer's image store."""
    if peer.name == "berth":
        root = peer.extra["berthd"].state_dir / "images"
        return root / "blobs" / "sha256", root / "snapshots"
    root = peer.extra["containerd"].root
    return (root / "io.containerd.content.v1.content" / "blobs" / "sha256",
            root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots")


def _entries(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


def remove_image(peer: Peer, ref: str) -> None:
    """RemoveImage; an image that is not there is fine (CRI says idempotent, not all agree)."""
    pb = peer.client.pb
    try:
        peer.client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)),
                                      timeout=120)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise


def cold_pull(env: Env, plan: Plan) -> list[Row]:
    """PullImage of the 10-layer image from nothing: busybox (its base layer) is removed too."""
    big, busybox = env.images["big"].ref, env.images["busybox"].ref
    layers = set(_layers(env))
    baseline: dict[str, set[str]] = {}
    for peer in env.peers():
        for ref in (big, busybox):
            remove_image(peer, ref)
        baseline[peer.name] = _entries(_store(peer)[1])

    cpu: dict[str, list[float]] = {"berth": [], "containerd": []}

    def sample(peer: Peer) -> Callable[[], float]:
        def once() -> float:
            c0 = cpu_seconds(daemon_pids(peer))
            took = timed(lambda: pull(peer, big))
            cpu[peer.name].append(cpu_seconds(daemon_pids(peer)) - c0)
            remove_image(peer, big)
            blobs, snaps = _store(peer)
            left = layers & _entries(blobs)
            extra = _entries(snaps) - baseline[peer.name]
            if left or extra:
                raise AssertionError(f"{peer.name}: RemoveImage left {len(left)} layer blobs and "
                                     f"{len(extra)} snapshots: the next pull would not be cold")
            return took
        return once

    b, c = interleave(sample(env.berth), sample(env.ctrd), plan.pulls, 1)
    for peer in env.peers():
        pull(peer, busybox)
    use = {k: percentile(v[1:], 50) for k, v in cpu.items()}  # the first is the warm-up
    return [Row("cold PullImage, 50 MB / 10 layers", "ms", b, c, 0.5,
                note="blobs and snapshots checked gone before every pull; daemon CPU per pull "
                f"p50: berth {use['berth']:.2f} s, containerd {use['containerd']:.2f} s")]
