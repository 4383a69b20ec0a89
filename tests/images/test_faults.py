"""Token auth, mirrors and transfer faults, against a small registry server of our own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.images.registry import Auth, RegistryConfig, RegistryError, Unauthorized
from runtime.images.store import ImageStore, PullError
from tests.fixtures.hostclean import pids_with_arg
from tests.fixtures.images import build_layouts, manifest_layers
from tests.fixtures.waits import until
from tests.images.ingest_probe import ingesting, size
from tests.images.miniregistry import Faults, mini_registry
from tests.images.test_pull import pull

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def layouts() -> dict[str, Path]:
    lay = build_layouts(["busybox", "big"])
    return {"e2e/busybox": lay["busybox"], "e2e/big": lay["big"]}


def _nothing_visible(store: ImageStore) -> None:
    assert store.list() == [] and store.snapshots.list() == set()
    assert not [p for p in store.snapshots.root.iterdir()]


def test_token_auth(tmp_path: Path, layouts) -> None:
    faults = Faults(token_user=("tok-user", "tok-pw"))
    with mini_registry(layouts, faults) as reg:
        ref = f"127.0.0.1:{reg.port}/e2e/busybox:1.0"
        store = ImageStore(tmp_path)
        want = f"401 Unauthorized from registry 127.0.0.1:{reg.port}"
        with pytest.raises(Unauthorized, match=want):
            pull(store, ref)
        with pytest.raises(Unauthorized, match="token endpoint refused"):
            pull(store, ref, auth=Auth(username="tok-user", password="nope"))
        faults.token_requests.clear()
        img = pull(store, ref, auth=Auth(username="tok-user", password="tok-pw"))
        assert img.repo_tags == [ref]
        # one token per scope for the whole pull (manifest, config, layer)
        scope = "repository:e2e/busybox:pull"
        assert faults.token_requests == [{"service": "mini", "scope": scope}]
        import asyncio

        async def with_then_without() -> None:
            try:
                await store.pull(ref, auth=Auth(username="tok-user", password="tok-pw"))
                with pytest.raises(Unauthorized):  # no riding on another credential's token
                    await store.pull(ref)
            finally:
                await store.aclose()

        asyncio.run(with_then_without())
        tok = next(iter(reg.tokens))
        store2 = ImageStore(tmp_path / "b")
        assert pull(store2, ref, auth=Auth(registry_token=tok)).id == img.id


def test_mirror_is_tried_first(tmp_path: Path, layouts) -> None:
    with mini_registry(layouts) as reg:
        cfg = RegistryConfig(mirrors={"127.0.0.1:1": [f"http://127.0.0.1:{reg.port}"]})
        img = pull(ImageStore(tmp_path, cfg), "127.0.0.1:1/e2e/busybox:1.0")
        assert img.repo_tags == ["127.0.0.1:1/e2e/busybox:1.0"]
        # a dead mirror falls through to the registry itself
        dead = RegistryConfig(mirrors={f"127.0.0.1:{reg.port}": ["http://127.0.0.1:1"]})
        ref = f"127.0.0.1:{reg.port}/e2e/busybox:1.0"
        assert pull(ImageStore(tmp_path / "b", dead), ref).id == img.id
    with pytest.raises(RegistryError, match="ConnectError"):
        pull(ImageStore(tmp_path / "c", RegistryConfig(retries=1)), ref)


def test_digest_mismatch_rejected(tmp_path: Path, layouts) -> None:
    layer = manifest_layers(layouts["e2e/busybox"])[0]["digest"]
    with mini_registry(layouts, Faults(corrupt={layer})) as reg:
        store = ImageStore(tmp_path)
        with pytest.raises(PullError, match=f"blob {layer}: got sha256:"):
            pull(store, f"127.0.0.1:{reg.port}/e2e/busybox:1.0")
    _nothing_visible(store)
    assert not store.content.has(layer)
    assert os.listdir(store.content.ingest_dir) == []


def test_resume_after_interrupted_download(tmp_path: Path, layouts) -> None:
    faults = Faults(cut_after=2 << 20, cuts=2)
    with mini_registry(layouts, faults) as reg:
        img = pull(ImageStore(tmp_path), f"127.0.0.1:{reg.port}/e2e/big:1.0")
    ranges = [r for _p, r in faults.requests if r]
    assert len(ranges) >= 2 and all(r.startswith("bytes=") for r in ranges)
    assert len(img.layers) == 10


def test_progress_timeout(tmp_path: Path, layouts) -> None:
    with mini_registry(layouts, Faults(delay_per_chunk=1.0)) as reg:
        store = ImageStore(tmp_path, RegistryConfig(progress_timeout=0.3, retries=0))
        t0 = time.monotonic()
        with pytest.raises(PullError, match=r"no (byte|response) for 0.3s"):
            pull(store, f"127.0.0.1:{reg.port}/e2e/busybox:1.0")
        assert time.monotonic() - t0 < 10
    _nothing_visible(store)


def test_kill9_mid_pull_then_pull_again(tmp_path: Path, layouts) -> None:
    faults = Faults(delay_per_chunk=0.02)
    with mini_registry(layouts, faults) as reg:
        ref = f"127.0.0.1:{reg.port}/e2e/big:1.0"
        code = ("import asyncio,sys; from runtime.images.store import ImageStore;"
                "asyncio.run(ImageStore(sys.argv[1]).pull(sys.argv[2]))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), ref],
                                cwd=Path(__file__).parents[2])
        try:
            ingest = tmp_path / "images" / "ingest"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                snaps = list((tmp_path / "images" / "snapshots").glob("*"))
                if ingesting(ingest) and snaps:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("pull did not get going")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # its unpack workers exit with it (they hold their snapshot dirs' locks until then)
        until(lambda: not pids_with_arg(str(tmp_path / "images" / "snapshots")),
              what="the unpack workers of the killed pull exited")
        store = ImageStore(tmp_path)  # start-up cleanup runs here
        assert store.list() == []
        # a worker gone from ps may still hold its dir's lock while it finishes exiting (CI saw
        # that); cleanup then removes the dir once the lock goes
        until(lambda: not [p for p in store.snapshots.root.iterdir()
                           if p.name.startswith(".tmp-")],
              what="start-up cleanup removed the killed pull's unpack dirs")
        faults.delay_per_chunk = 0
        faults.requests.clear()
        img = pull(store, ref)
        assert [i.id for i in store.list()] == [img.id]
        assert any(r for _p, r in faults.requests), "the partial download was resumed"


def test_concurrent_pulls_share_downloads(tmp_path: Path, layouts) -> None:
    import asyncio

    faults = Faults(delay_per_chunk=0.005)
    with mini_registry(layouts, faults) as reg:
        store = ImageStore(tmp_path)
        ref = f"127.0.0.1:{reg.port}/e2e/big:1.0"

        async def main():
            try:
                return await asyncio.gather(store.pull(ref), store.pull(ref), store.pull(ref))
            finally:
                await store.aclose()

        a, b, c = asyncio.run(main())
    assert a.id == b.id == c.id and len(store.list()) == 1
    blob_gets = [p for p, _r in faults.requests]
    assert len(blob_gets) == len(set(blob_gets)) == 11  # config + 10 layers, each fetched once
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]


def test_cancelled_pull_leaves_nothing(tmp_path: Path, layouts) -> None:
    import asyncio

    with mini_registry(layouts, Faults(delay_per_chunk=0.01)) as reg:
        store = ImageStore(tmp_path)
        ingest = store.content.ingest_dir

        async def main() -> None:
            task = asyncio.create_task(store.pull(f"127.0.0.1:{reg.port}/e2e/big:1.0"))
            for _ in range(600):
                if [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")] \
                        and ingesting(ingest):
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await store.aclose()

        asyncio.run(asyncio.wait_for(main(), 60))
    assert store.list() == []
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]
    store.gc()  # finished layers of the abandoned pull stay (for a retry) until a GC
    _nothing_visible(store)
    assert store.content.list() == set()


def test_layer_unpacks_while_downloading(tmp_path: Path, layouts) -> None:
    import asyncio

    layer = manifest_layers(layouts["e2e/busybox"])[0]
    with mini_registry(layouts, Faults(delay_per_chunk=0.02, chunk=16384)) as reg:
        store = ImageStore(tmp_path)
        seen: list[int] = []

        async def main() -> None:
            task = asyncio.create_task(store.pull(f"127.0.0.1:{reg.port}/e2e/busybox:1.0"))
            partial = store.content.ingest_dir / layer["digest"][7:]
            while not task.done():
                if list(store.snapshots.root.glob(".tmp-*/fs/etc/passwd")):
                    n = size(partial)  # read after the file showed: still partial proves it
                    if n:
                        seen.append(n)
                        break
                await asyncio.sleep(0.01)
            await task
            await store.aclose()

        asyncio.run(asyncio.wait_for(main(), 60))
    assert seen and seen[0] < layer["size"], "files appeared before the layer finished"
    assert len(store.list()) == 1


def test_two_processes_pull_the_same_image(tmp_path: Path, layouts) -> None:
    with mini_registry(layouts, Faults(delay_per_chunk=0.002)) as reg:
        ref = f"127.0.0.1:{reg.port}/e2e/big:1.0"
        code = ("import asyncio,sys; from runtime.images.store import ImageStore;"
                "asyncio.run(ImageStore(sys.argv[1]).pull(sys.argv[2]))")
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "shared"), ref],
                                  cwd=Path(__file__).parents[2]) for _ in range(2)]
        try:
            assert [p.wait(60) for p in procs] == [0, 0]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    store = ImageStore(tmp_path / "shared")
    assert len(store.snapshots.list()) == 10 and os.listdir(store.content.ingest_dir) == []
