"""Image endpoints through docker-py: pull, list, inspect, tag, remove (409 while in use)."""

from __future__ import annotations

import docker
import pytest


def test_pull_list_inspect(dclient, busybox, e2e_images):
    img = dclient.images.get(busybox)
    assert img.id == e2e_images["busybox"].config_digest
    assert busybox in img.tags
    assert img.attrs["RootFS"]["Type"] == "layers" and img.attrs["RootFS"]["Layers"]
    assert img.attrs["Config"]["Cmd"] == ["sh"]
    assert busybox in {t for i in dclient.images.list() for t in i.tags}
    assert dclient.images.get(img.id[7:19]).id == img.id


def test_pull_streams_docker_progress(dclient, busybox):
    lines = list(dclient.api.pull(busybox, stream=True, decode=True))
    assert lines[-1]["status"].startswith("Status: Image is up to date for")
    assert any(line.get("status", "").startswith("Digest: sha256:") for line in lines)


def test_tag_and_remove(dclient, busybox, cleanup):
    img = dclient.images.get(busybox)
    assert img.tag("127.0.0.1:1/berth/extra", "v1")
    assert "127.0.0.1:1/berth/extra:v1" in dclient.images.get(img.id).tags
    dclient.images.remove("127.0.0.1:1/berth/extra:v1")  # untag only: busybox keeps it
    assert "127.0.0.1:1/berth/extra:v1" not in dclient.images.get(img.id).tags
    cleanup.append("holds-image")
    dclient.containers.create(busybox, ["true"], name="holds-image")
    with pytest.raises(docker.errors.APIError) as err:
        dclient.images.remove(busybox)
    assert err.value.status_code == 409


def test_missing_image(dclient):
    with pytest.raises(docker.errors.ImageNotFound):
        dclient.images.get("127.0.0.1:1/nothing/here:1")
    with pytest.raises(docker.errors.ImageNotFound):
        dclient.containers.create("127.0.0.1:1/nothing/here:1", ["true"])
