"""Image endpoints through docker-py: pull (streamed progress, X-Registry-Auth), list, inspect,
tag, remove and history. Every image comes from the loopback test registries."""

from __future__ import annotations

import contextlib

import docker
import pytest

from dockertest.harness import Daemon
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry


def _drop(dk: Daemon, ref: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        dk.api.remove_image(ref)  # by name: untags only when other tags remain


def test_pull_streams_per_layer_progress(dk: Daemon, e2e_images: dict[str, PushedImage]) -> None:
    """The JSON progress the CLI draws as bars: one id per layer, Pull complete for each."""
    img = e2e_images["layers"]
    _drop(dk, img.ref)
    repo, tag = img.ref.rsplit(":", 1)
    events = list(dk.api.pull(repo, tag=tag, stream=True, decode=True))
    assert all("error" not in e for e in events), events
    done = {e["id"] for e in events if e.get("status") in ("Pull complete", "Already exists")}
    assert len(done) == 4, events  # the `layers` image has 4 layers (one shared with busybox)
    assert any(e.get("status") == "Downloading" and "progressDetail" in e for e in events)
    assert any(str(e.get("status", "")).startswith("Digest: sha256:") for e in events)
    assert dk.api.inspect_image(img.ref)["Id"] == img.config_digest
    _drop(dk, img.ref)


def test_pull_with_registry_auth(dk: Daemon, auth_e2e_images: dict[str, PushedImage],
                                 auth_registry: Registry) -> None:  # fmt: skip
    ref = auth_e2e_images["busybox"].ref
    _drop(dk, ref)
    repo, tag = ref.rsplit(":", 1)
    with pytest.raises(docker.errors.APIError) as err:
        dk.api.pull(repo, tag=tag)
        dk.api.inspect_image(ref)  # docker-py hides a stream's error; inspect shows it
    assert "no basic auth credentials" in str(err.value) or err.value.status_code == 404
    creds = {"username": auth_registry.username, "password": auth_registry.password}
    dk.api.pull(repo, tag=tag, auth_config=creds)
    assert ref in dk.api.inspect_image(ref)["RepoTags"]  # same image ID as e2e busybox
    _drop(dk, ref)


def test_pull_unknown_is_404(dk: Daemon) -> None:
    repo = dk.busybox.rsplit("/", 2)[0] + "/e2e/no-such-image"
    with pytest.raises(docker.errors.NotFound) as err:
        dk.client.images.pull(repo, tag="1.0")
    assert "no-such-image" in str(err.value)


def test_list_and_inspect(dk: Daemon, e2e_images: dict[str, PushedImage]) -> None:
    img = e2e_images["busybox"]
    listed = [i for i in dk.api.images() if dk.busybox in (i["RepoTags"] or [])]
    assert len(listed) == 1 and listed[0]["Id"] == img.config_digest
    assert dk.api.images(name=dk.busybox.rsplit(":", 1)[0], quiet=True) == [img.config_digest]
    info = dk.api.inspect_image(dk.busybox)
    assert info["Id"] == img.config_digest and dk.busybox in info["RepoTags"]
    assert img.by_digest in info["RepoDigests"]
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["RootFS"]["Type"] == "layers" and info["RootFS"]["Layers"]
    assert info["Size"] > 0 and info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert dk.api.inspect_image(img.config_digest[7:19])["Id"] == img.config_digest


def test_tag_history_and_remove(dk: Daemon) -> None:
    repo = dk.busybox.rsplit(":", 1)[0]
    assert dk.api.tag(dk.busybox, repo, "dt-tag") is True
    tagged = f"{repo}:dt-tag"
    info = dk.api.inspect_image(tagged)
    assert {dk.busybox, tagged} <= set(info["RepoTags"])
    hist = dk.api.history(tagged)
    assert hist and hist[0]["Id"] == info["Id"] and "Created" in hist[0]
    removed = dk.api.remove_image(tagged)
    assert removed == [{"Untagged": tagged}]
    assert dk.api.inspect_image(dk.busybox)["Id"] == info["Id"]  # still there by its other tag


def test_remove_in_use_conflicts(dk: Daemon) -> None:
    repo = dk.busybox.rsplit(":", 1)[0]
    dk.api.tag(dk.busybox, repo, "dt-inuse")
    tagged = f"{repo}:dt-inuse"
    img_id = dk.api.inspect_image(tagged)["Id"]
    c = dk.client.containers.create(tagged, ["true"])
    # by ID while a container uses it: 409, even though the tags could go
    with pytest.raises(docker.errors.APIError) as err:
        dk.api.remove_image(img_id)
    assert err.value.status_code == 409
    assert "being used by" in str(err.value.explanation) or "must be forced" in str(
        err.value.explanation
    )
    dk.api.remove_image(tagged)  # one of two tags: only untags
    assert dk.api.inspect_image(img_id)["Id"] == img_id
    c.remove()


def test_remove_unknown_404(dk: Daemon) -> None:
    with pytest.raises(docker.errors.ImageNotFound) as err:
        dk.api.remove_image("127.0.0.1:1/e2e/nothing:none")
    assert "No such image" in str(err.value.explanation)


def test_remove_force_noprune(dk: Daemon, e2e_images: dict[str, PushedImage]) -> None:
    """force removes every tag of an image; noprune keeps nothing extra on a one-image tree."""
    img = e2e_images["busybox-docker"]
    dk.client.images.pull(img.ref)
    repo = img.ref.rsplit(":", 1)[0]
    dk.api.tag(img.ref, repo, "dt-second")
    img_id = dk.api.inspect_image(img.ref)["Id"]
    with pytest.raises(docker.errors.APIError) as err:
        dk.api.remove_image(img_id)  # two tags, by ID, not forced
    assert err.value.status_code == 409
    out = dk.api.remove_image(img_id, force=True, noprune=True)
    assert {"Deleted": img_id} in out
    assert {"Untagged": img.ref} in out and {"Untagged": f"{repo}:dt-second"} in out
    with pytest.raises(docker.errors.ImageNotFound):
        dk.api.inspect_image(img_id)
