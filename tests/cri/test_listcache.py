"""The pre-serialised list cache: rebuilt exactly when its inputs change, bytes parse back."""

from __future__ import annotations

from pathlib import Path

from engine.statecache import ListCache, StateCache
from engine.store import PodRecord, Store
from proto import api_pb2 as pb
from runtime.monitor.state import ContainerState


def _pod(i: int) -> PodRecord:
    return PodRecord(id=f"p{i}", name=f"n{i}", namespace="ns", uid="u", attempt=0,
                     state="SANDBOX_READY", created_ns=i)


def _entries(store: Store, built: list[int]) -> list[tuple[object, str, bytes]]:
    built.append(1)
    return [(r, r.state, pb.ListPodSandboxResponse(items=[pb.PodSandbox(id=r.id)])
             .SerializeToString()) for r in store.pods.scan()]


def test_rebuilt_only_after_a_write(tmp_path: Path) -> None:
    store, cache = Store(tmp_path / "m.db"), ListCache()
    built: list[int] = []
    store.pods.add(_pod(1))
    store.pods.add(_pod(2))

    def get() -> bytes:
        key = (store.pods, store.pods.generation)
        return cache.get("pods", key, lambda: _entries(store, built)).whole

    first = get()
    assert get() is first and len(built) == 1
    assert [p.id for p in pb.ListPodSandboxResponse.FromString(first).items] == ["p1", "p2"]
    store.pods.put(_pod(1))
    get()
    store.pods.delete("p2")
    assert [p.id for p in pb.ListPodSandboxResponse.FromString(get()).items] == ["p1"]
    assert len(built) == 3
    store.close()


def test_state_generation_moves_only_on_change() -> None:
    states = StateCache()
    st = ContainerState(id="c1", status="running")
    states.apply(st)
    gen = states.generation
    states.apply(ContainerState(id="c1", status="created"))  # stale: ignored
    states.drop("nope")
    assert states.generation == gen
    states.drop("c1")
    assert states.generation == gen + 1
