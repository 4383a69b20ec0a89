"""Pulls from the real loopback docker-registry: formats, multi-arch, auth, merged tree."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runtime.images.puller import Pull
from runtime.images.records import Image
from runtime.images.registry import Auth, NotFound, Platform, Unauthorized, host_platform
from runtime.images.store import ImageStore, InUse
from tests.fixtures.images import layers_expected, manifest_layers, push_images
from tests.fixtures.waits import until
from tests.images.ingest_probe import size
from tests.images.test_unpack_overlay import overlay

pytestmark = pytest.mark.timeout(120)


def pull(store: ImageStore, ref: str, **kw) -> Image:
    async def main() -> Image:
        try:
            return await store.pull(ref, **kw)
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


@pytest.mark.parametrize("name", ["busybox", "busybox-docker", "busybox-oci"])
def test_pull_formats(store: ImageStore, e2e_images, name: str, tmp_path: Path) -> None:
    img = pull(store, e2e_images[name].ref)
    pushed = e2e_images[name]
    assert img.repo_tags == [pushed.ref]
    assert img.repo_digests == [pushed.by_digest]
    assert img.config.cmd == ["sh"] and img.platform == str(host_platform())
    assert store.get(img.id) is img and store.get(img.id[7:19]) is img
    assert store.get(pushed.ref) is img and store.get(pushed.by_digest) is img
    lowers = store.rootfs_lowers(img.id)
    assert len(lowers) == 1 and os.path.isfile(os.path.join(lowers[0], "bin", "busybox"))
    ls = os.stat(os.path.join(lowers[0], "bin", "ls"))
    assert ls.st_ino == os.stat(os.path.join(lowers[0], "bin", "busybox")).st_ino
    assert store.config(img.id)["rootfs"]["diff_ids"] == img.diff_ids
    # a second store over the same state sees the image; a re-pull is a no-op download
    again = ImageStore(tmp_path / "state")
    assert [i.id for i in again.list()] == [img.id]
    assert pull(again, pushed.by_digest).id == img.id


@pytest.mark.skipif(host_platform().architecture != "amd64", reason="fixture index: amd64+arm64")
def test_pull_multiarch_index(store: ImageStore, e2e_images) -> None:
    pushed = e2e_images["multiarch"]
    img = pull(store, pushed.ref)
    assert img.config.labels == {"berth.test/arch": "amd64"}
    assert img.repo_digests == [pushed.by_digest] and img.manifest_digest != pushed.digest
    arm = pull(store, pushed.ref, platform=Platform("linux", "arm64", "v8"))
    assert arm.config.labels == {"berth.test/arch": "arm64"} and arm.platform == "linux/arm64/v8"
    assert store.get(pushed.ref) is arm and img.repo_tags == []
    with pytest.raises(NotFound, match="no manifest for platform linux/s390x"):
        pull(store, pushed.ref, platform=Platform("linux", "s390x"))


def test_layers_merged_view(store: ImageStore, e2e_images, tmp_path: Path) -> None:
    img = pull(store, e2e_images["layers"].ref)
    want = layers_expected(e2e_images)
    with overlay(store.rootfs_lowers(img.id), tmp_path / "m") as m:
        for path, attrs in want["present"].items():
            p = m / path.lstrip("/")
            st = os.lstat(p)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
                attrs["mode"], attrs["uid"], attrs["gid"]), path
            if attrs["type"] == "file":
                assert p.read_text() == attrs["content"], path
            elif attrs["type"] == "symlink":
                assert os.readlink(p) == attrs["target"], path
            if "same_inode_as" in attrs:
                assert st.st_ino == os.lstat(m / attrs["same_inode_as"].lstrip("/")).st_ino
        for path in want["absent"]:
            assert not os.path.lexists(m / path.lstrip("/")), path


def test_missing_tag_and_repo(store: ImageStore, registry) -> None:
    with pytest.raises(NotFound, match=f"404 Not Found from registry {registry.host}"):
        pull(store, f"{registry.host}/e2e/busybox:nope")
    with pytest.raises(NotFound):
        pull(store, f"{registry.host}/no/such-repo:1")
    assert store.list() == []


def test_basic_auth(store: ImageStore, auth_registry) -> None:
    pushed = push_images(auth_registry.host, ["busybox"], creds=auth_registry.creds)["busybox"]
    with pytest.raises(Unauthorized) as e:
        pull(store, pushed.ref)
    assert str(e.value).startswith(
        f"pull {pushed.ref}: 401 Unauthorized from registry {auth_registry.host} "
        "(check credentials)")
    with pytest.raises(Unauthorized, match="401 Unauthorized"):
        pull(store, pushed.ref, auth=Auth(username="berth", password="wrong"))
    async def with_then_without() -> None:
        try:
            await store.pull(pushed.ref, auth=Auth(username="berth", password="s3cret-pw"))
            with pytest.raises(Unauthorized):  # the same client must not reuse those creds
                await store.pull(pushed.ref)
        finally:
            await store.aclose()

    asyncio.run(with_then_without())
    img = pull(store, pushed.ref, auth=Auth(username="berth", password="s3cret-pw"))
    assert img.repo_tags == [pushed.ref]
    import base64

    token = base64.b64encode(b"berth:s3cret-pw").decode()
    assert pull(ImageStore(store.index.path.parent.parent), pushed.ref,
                auth=Auth(auth=token)).id == img.id


def test_remove_untag_in_use_and_gc(store: ImageStore, e2e_images) -> None:
    a = pull(store, e2e_images["busybox"].ref)
    b = pull(store, e2e_images["layers"].ref)
    alias = e2e_images["busybox"].ref.replace(":1.0", ":alias")
    store.index.images[a.id].repo_tags.append(alias)
    store.remove(alias)
    assert store.index.images[a.id].repo_tags == [e2e_images["busybox"].ref]
    with pytest.raises(InUse):
        store.remove(b.id, in_use=lambda i: i == b.id)
    before = store.snapshots.list()
    store.remove(b.id)
    assert store.get(b.id) is None and store.get(a.id) is not None
    assert store.snapshots.list() == set(a.chain_ids) and len(before) == 4
    assert store.content.list() == set(a.blobs)
    store.remove(e2e_images["busybox"].ref)
    assert store.list() == [] and store.snapshots.list() == set() and store.content.list() == set()
    used, inodes = store.fs_usage()
    assert inodes == 0 and used == 0
    assert json.loads(store.index.path.read_text())["images"] == []


def test_store_survives_event_loop_changes(store: ImageStore, e2e_images) -> None:
    # no aclose between runs: a client bound to a dead loop must not be reused
    ref = e2e_images["busybox"].ref
    a = asyncio.run(store.pull(ref))
    b = asyncio.run(store.pull(ref))
    assert a.id == b.id
    asyncio.run(store.aclose())


def test_snapshots_root_is_an_orlov_top_dir(tmp_path: Path) -> None:
    """On ext4 the snapshots dir carries chattr +T, so each snapshot is spread to a block
    group with free inodes (other filesystems: nothing is set and nothing fails)."""
    store = ImageStore(tmp_path / "state")
    root = store.snapshots.root
    got = subprocess.run(["lsattr", "-d", str(root)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"no file attributes here: {got.stderr.strip()}")
    assert "T" in got.stdout.split()[0]
    ImageStore(tmp_path / "state")  # set already: a second start changes nothing
    assert "T" in subprocess.run(["lsattr", "-d", str(root)], capture_output=True,
                                 text=True).stdout.split()[0]


def test_unpacks_take_turns_on_the_stores_slots(store: ImageStore, e2e_images,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers stream three at a time, but no more unpack at once than the store has slots (one
    per CPU: more only hand the GIL back and forth)."""
    store.unpack_slots = threading.BoundedSemaphore(1)
    active = peak = 0
    lock = threading.Lock()
    real = Pull._unpack

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(Pull, "_unpack", counted)
    img = pull(store, e2e_images["big"].ref)
    assert peak == 1 and len(store.rootfs_lowers(img.id)) == 10


def test_layers_waiting_for_a_slot_download_ahead_and_cancel_promptly(
        store: ImageStore, e2e_images) -> None:
    store.unpack_slots = threading.BoundedSemaphore(1)
    assert store.unpack_slots.acquire()  # the one slot is busy: nothing can unpack
    loop = asyncio.new_event_loop()
    task = loop.create_task(store.pull(e2e_images["big"].ref))
    runner = threading.Thread(target=loop.run_until_complete, args=(asyncio.wait([task]),))
    runner.start()
    try:
        streamed = {ly["digest"][7:]: ly["size"]
                    for ly in manifest_layers(e2e_images["big"].layout)[:3]}

        def downloaded() -> bool:
            have = {p.name: size(p) for p in store.content.ingest_dir.iterdir()}
            return all(have.get(h) == n for h, n in streamed.items())

        until(downloaded, what="the three streamed layers downloaded while waiting to unpack")
        t0 = time.monotonic()
        loop.call_soon_threadsafe(task.cancel)
        runner.join(10)
        assert not runner.is_alive() and time.monotonic() - t0 < 5
        assert task.cancelled()
    finally:
        store.unpack_slots.release()
        runner.join(10)
        loop.run_until_complete(store.aclose())
        loop.close()
    assert store.list() == [] and store.snapshots.list() == set()
    assert not [p for p in store.snapshots.root.iterdir() if p.name.startswith(".tmp-")]
