"""The unpack worker processes pulls hand their layers to: when they start, reuse, death,
hostile layers."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import signal
import tarfile
from pathlib import Path

import pytest

from runtime.images.puller import WARM_AFTER
from runtime.images.store import ImageStore, PullError
from tests.fixtures.hostclean import pids_with_arg
from tests.fixtures.image_defs import base_config
from tests.fixtures.images import build_layouts
from tests.fixtures.oci import Blob, Layout, sha256
from tests.fixtures.waits import until
from tests.images.ingest_probe import ingesting
from tests.images.miniregistry import Faults, mini_registry

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    lay = build_layouts(["busybox", "big"])
    evil = Layout(tmp_path_factory.mktemp("evil"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        body = b"owned\n"
        ti = tarfile.TarInfo("etc/../../escape")
        ti.size = len(body)
        tf.addfile(ti, io.BytesIO(body))
    layer = Blob(gzip.compress(raw.getvalue(), mtime=0), sha256(raw.getvalue()))
    evil.tag(evil.image([layer], base_config()), "1.0")
    many = Layout(tmp_path_factory.mktemp("many"))
    many.tag(many.image([_small_files(i, WARM_AFTER // 2 + 10) for i in range(4)],
                        base_config()), "1.0")
    return {"e2e/busybox": lay["busybox"], "e2e/big": lay["big"], "e2e/evil": evil.root,
            "e2e/many": many.root}


def _small_files(layer: int, n: int) -> Blob:
    """A gzip layer of n small files under a dir of its own."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(n):
            body = f"{layer}/{i}\n".encode()
            ti = tarfile.TarInfo(f"site{layer}/f{i}.py")
            ti.size = len(body)
            tf.addfile(ti, io.BytesIO(body))
    return Blob(gzip.compress(raw.getvalue(), mtime=0), sha256(raw.getvalue()))


def _workers(store: ImageStore) -> list[int]:
    return pids_with_arg(str(store.snapshots.root))


def _warm_and_ready(store: ImageStore) -> list[int]:
    store.procs.open()
    store.procs.warm()
    until(lambda: all(w.is_ready() for w in store.procs._idle), what="the workers are ready")
    return sorted(_workers(store))


def test_workers_start_only_for_many_files(tmp_path: Path, layouts) -> None:
    """A pull of a few big files unpacks in berthd and starts no worker (their start costs more
    than it saves); one that unpacks WARM_AFTER entries in berthd starts them, and they stay
    for the next pull."""
    with mini_registry(layouts) as reg:
        store = ImageStore(tmp_path)
        seen: list[list[int]] = []

        async def main() -> None:
            try:
                await store.pull(f"127.0.0.1:{reg.port}/e2e/big:1.0")
                seen.append(_workers(store))
                await store.pull(f"127.0.0.1:{reg.port}/e2e/many:1.0")
                for _ in range(600):  # they start in a thread of their own
                    if len(_workers(store)) == store.procs.size:
                        break
                    await asyncio.sleep(0.05)
                seen.append(_workers(store))
            finally:
                await store.aclose()

        asyncio.run(main())
    assert seen[0] == [], "a pull of a few big files started workers"
    assert len(seen[1]) == store.procs.size, "a pull of many files started no workers"
    assert len(store.list()) == 2 and _workers(store) == []


def test_ready_workers_serve_pull_after_pull_and_stop_when_let_go(tmp_path: Path,
                                                                  layouts) -> None:
    with mini_registry(layouts) as reg:
        store = ImageStore(tmp_path)
        seen: list[list[int]] = [_warm_and_ready(store)]

        async def main() -> None:
            try:
                for name in ("many", "busybox"):
                    await store.pull(f"127.0.0.1:{reg.port}/e2e/{name}:1.0")
                    seen.append(sorted(_workers(store)))
                store.procs.stop_idle()  # what LINGER seconds after the last pull does
                seen.append(_workers(store))
            finally:
                await store.aclose()

        asyncio.run(main())
    assert len(seen[0]) == store.procs.size
    assert seen[1] == seen[0] and seen[2] == seen[0], "the same workers served both pulls"
    assert seen[3] == []
    assert len(store.list()) == 2


def test_a_worker_that_died_idle_is_not_used(tmp_path: Path, layouts) -> None:
    with mini_registry(layouts) as reg:
        store = ImageStore(tmp_path)
        _warm_and_ready(store)
        idle = list(store.procs._idle)
        for w in idle:
            os.kill(w.popen.pid, signal.SIGKILL)
        until(lambda: all(w.popen.poll() is not None for w in idle), what="the idle workers died")

        async def main() -> None:
            try:
                await store.pull(f"127.0.0.1:{reg.port}/e2e/big:1.0")
            finally:
                await store.aclose()

        asyncio.run(main())
    assert len(store.list()) == 1 and _workers(store) == []


def test_a_worker_killed_mid_layer_fails_the_pull_and_leaves_nothing(tmp_path: Path,
                                                                     layouts) -> None:
    with mini_registry(layouts, Faults(delay_per_chunk=0.02)) as reg:
        store = ImageStore(tmp_path)
        _warm_and_ready(store)  # the layers go to workers
        ingest = store.content.ingest_dir

        async def main() -> None:
            task = asyncio.create_task(store.pull(f"127.0.0.1:{reg.port}/e2e/big:1.0"))
            try:
                for _ in range(600):  # layers are streaming into their workers
                    if [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")] \
                            and ingesting(ingest):
                        break
                    await asyncio.sleep(0.05)
                for pid in _workers(store):
                    os.kill(pid, signal.SIGKILL)
                with pytest.raises(PullError, match=r"the unpack worker exited \(status -9\)"):
                    await task
            finally:
                await store.aclose()

        asyncio.run(asyncio.wait_for(main(), 60))
    assert store.list() == [] and _workers(store) == []
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]


def test_a_hostile_layer_fails_in_the_worker_with_its_reason(tmp_path: Path, layouts) -> None:
    with mini_registry(layouts) as reg:
        store = ImageStore(tmp_path)
        _warm_and_ready(store)

        async def main() -> None:
            try:
                with pytest.raises(PullError, match=r"path 'etc/\.\./\.\./escape' contains '\.\.'"):
                    await store.pull(f"127.0.0.1:{reg.port}/e2e/evil:1.0")
                # the worker that refused it serves the next pull
                await store.pull(f"127.0.0.1:{reg.port}/e2e/busybox:1.0")
            finally:
                await store.aclose()

        asyncio.run(main())
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    assert [i.repo_tags for i in store.list()] == [[f"127.0.0.1:{reg.port}/e2e/busybox:1.0"]]
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]
