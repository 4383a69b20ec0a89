"""Pushes to the real loopback docker-registry, checked by skopeo and by pulling back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.images import pusher
from runtime.images.pusher import PushError, PushEvent, PushResult
from runtime.images.records import Image
from runtime.images.registry import Auth
from runtime.images.store import ImageStore

pytestmark = pytest.mark.timeout(180)


def run(store: ImageStore, job: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await job()
        finally:
            await store.aclose()

    return asyncio.run(main())


def pull(store: ImageStore, ref: str, **kw: Any) -> Image:
    return run(store, lambda: store.pull(ref, **kw))


def push(store: ImageStore, source: str, target: str, **kw: Any
         ) -> tuple[PushResult, list[PushEvent]]:
    events: list[PushEvent] = []
    result = run(store, lambda: store.push(source, target, progress=events.append, **kw))
    return result, events


def _digests(store: ImageStore, image_id: str) -> list[str]:
    img = store.get(image_id)
    assert img is not None, image_id
    return list(img.repo_digests)


def skopeo_digest(ref: str, creds: str | None = None) -> str:
    cmd = ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"]
    if creds:
        cmd[2:2] = ["--creds", creds]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def final_status(events: list[PushEvent]) -> dict[str, str]:
    """The last status per blob digest (the manifest event included)."""
    return {e.digest: e.status for e in events}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state")


def test_push_mounts_then_skips_and_pulls_back(store: ImageStore, e2e_images, registry,
                                               tmp_path: Path) -> None:
    src = e2e_images["busybox"]
    img = pull(store, src.ref)
    target = f"{registry.host}/pushed-{uuid.uuid4().hex[:8]}/busybox:v1"
    result, events = push(store, src.ref, target)
    assert result.digest == img.manifest_digest
    assert skopeo_digest(target) == img.manifest_digest
    status = final_status(events)
    # the image is known as e2e/busybox on the same registry: its layer is mounted, not sent
    assert status[img.layers[0]] == f"Mounted from {src.ref.split('/', 1)[1].split(':')[0]}"
    assert status[img.manifest_digest] == "Pushed manifest"
    assert any(d.endswith(f"@{img.manifest_digest}") and "pushed-" in d
               for d in _digests(store, img.id))
    # a second push finds everything there
    _, again = push(store, img.id, target)
    assert {s for d, s in final_status(again).items() if d != img.manifest_digest} == {
        "Layer already exists"}
    # what was pushed pulls back into a fresh store as the same image
    other = ImageStore(tmp_path / "other")
    back = pull(other, target)
    assert back.id == img.id and back.manifest_digest == img.manifest_digest


@pytest.mark.parametrize("chunked", [False, True])
def test_push_uploads_to_another_registry_with_basic_auth(
        store: ImageStore, e2e_images, auth_registry, monkeypatch, chunked: bool) -> None:
    if chunked:  # force PATCH chunks on the big image's ~5 MB layers
        monkeypatch.setattr(pusher, "MONOLITHIC_MAX", 1 << 20)
    src = e2e_images["big"]
    img = pull(store, src.ref)
    target = f"{auth_registry.host}/up-{uuid.uuid4().hex[:8]}/big:1"
    auth = Auth(username=auth_registry.username, password=auth_registry.password)
    result, events = push(store, src.ref, target, auth=auth)
    assert skopeo_digest(target, auth_registry.creds) == img.manifest_digest == result.digest
    status = final_status(events)
    assert all(status[d] == "Pushed" for d in img.layers)
    pushing = [e for e in events if e.status == "Pushing" and e.digest == img.layers[0]]
    assert pushing and pushing[-1].current == pushing[-1].total


def test_push_without_credentials_says_so_and_writes_no_manifest(
        store: ImageStore, e2e_images, auth_registry) -> None:
    img = pull(store, e2e_images["busybox"].ref)
    target = f"{auth_registry.host}/noauth-{uuid.uuid4().hex[:8]}/busybox:1"
    with pytest.raises(PushError, match=r"push .*401|no credentials"):
        push(store, img.id, target)
    probe = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds",
                            auth_registry.creds, f"docker://{target}"], capture_output=True)
    assert probe.returncode != 0


def test_failed_blob_leaves_the_old_manifest(store: ImageStore, e2e_images,
                                              auth_registry) -> None:
    a = pull(store, e2e_images["busybox"].ref)
    b = pull(store, e2e_images["layers"].ref)
    # another registry, so b's layers must be uploaded (nothing there to mount them from)
    target = f"{auth_registry.host}/keep-{uuid.uuid4().hex[:8]}/app:1"
    auth = Auth(username=auth_registry.username, password=auth_registry.password)
    push(store, a.id, target, auth=auth)
    # corrupt one of b's layer blobs: the registry refuses it (digest mismatch)
    victim = store.content.path(b.layers[-1])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(PushError, match=r"finishing the upload|uploading"):
        push(store, b.id, target, auth=auth)
    assert skopeo_digest(target, auth_registry.creds) == a.manifest_digest


def test_push_refuses_bad_targets(store: ImageStore, e2e_images, registry) -> None:
    img = pull(store, e2e_images["busybox"].ref)
    with pytest.raises(PushError, match="no such image"):
        push(store, "nothing/here:1", f"{registry.host}/x:1")
    with pytest.raises(PushError, match="digest reference"):
        push(store, img.id, f"{registry.host}/x@{img.manifest_digest}")
    with pytest.raises(PushError, match="invalid reference"):
        push(store, img.id, f"{registry.host}/UPPER:1")
    assert json.dumps(_digests(store, img.id)).count("/x@") == 0
