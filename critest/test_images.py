"""ImageService over the loopback registry: pull, status, list, remove."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from critest.util import container_config, create, sandbox
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.timeout(120)


def pull(cri: CriClient, ref: str, pulled: list[str], auth: object = None) -> str:
    req = cri.pb.PullImageRequest(image=cri.pb.ImageSpec(image=ref), auth=auth)
    pulled.append(ref)
    return str(cri.image.PullImage(req, timeout=90).image_ref)


def reraise_unimplemented(err: grpc.RpcError) -> None:
    """An expected-failure test must not pass just because the RPC does not exist."""
    if err.code() == grpc.StatusCode.UNIMPLEMENTED:
        raise err


def status(cri: CriClient, ref: str):
    req = cri.pb.ImageStatusRequest(image=cri.pb.ImageSpec(image=ref))
    return cri.image.ImageStatus(req, timeout=10)


def test_pull_status_list_remove(
    cri: CriClient, e2e_images: dict[str, PushedImage], pulled: list[str]
) -> None:
    img = e2e_images["busybox"]
    image_ref = pull(cri, img.ref, pulled)
    assert image_ref == img.config_digest
    st = status(cri, img.ref).image
    assert st.id == img.config_digest
    assert img.ref in st.repo_tags
    assert img.by_digest in st.repo_digests
    assert st.size > 0
    listed = cri.image.ListImages(cri.pb.ListImagesRequest(), timeout=10).images
    assert img.config_digest in {i.id for i in listed}
    cri.image.RemoveImage(cri.pb.RemoveImageRequest(image=cri.pb.ImageSpec(image=img.ref)))
    assert not status(cri, img.ref).HasField("image")


def test_status_of_unknown_image_is_empty(cri: CriClient, registry: Registry) -> None:
    resp = status(cri, f"{registry.host}/e2e/never-pushed:1.0")
    assert not resp.HasField("image")


def test_pull_by_digest(
    cri: CriClient, e2e_images: dict[str, PushedImage], pulled: list[str]
) -> None:
    img = e2e_images["busybox"]
    assert pull(cri, img.by_digest, pulled) == img.config_digest
    assert img.by_digest in status(cri, img.by_digest).image.repo_digests


@pytest.mark.parametrize("name", ["busybox-docker", "busybox-oci"])
def test_pull_manifest_formats(
    cri: CriClient, e2e_images: dict[str, PushedImage], pulled: list[str], name: str
) -> None:
    img = e2e_images[name]
    assert pull(cri, img.ref, pulled) == img.config_digest


def test_pull_multiarch_selects_amd64(
    cri: CriClient, e2e_images: dict[str, PushedImage], pulled: list[str]
) -> None:
    img = e2e_images["multiarch"]
    assert pull(cri, img.ref, pulled) == img.config_digest


def test_pull_missing_image_fails(cri: CriClient, registry: Registry, pulled: list[str]) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        pull(cri, f"{registry.host}/e2e/never-pushed:1.0", pulled)
    reraise_unimplemented(exc.value)
    pulled.clear()


def test_pull_with_credentials(
    cri: CriClient,
    auth_registry: Registry,
    auth_e2e_images: dict[str, PushedImage],
    pulled: list[str],
) -> None:
    img = auth_e2e_images["busybox"]
    with pytest.raises(grpc.RpcError) as exc:
        pull(cri, img.ref, pulled)
    reraise_unimplemented(exc.value)
    auth = cri.pb.AuthConfig(username=auth_registry.username, password=auth_registry.password)
    assert pull(cri, img.ref, pulled, auth) == img.config_digest


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 removes the reference of an image a container uses; the container "
    "keeps running",
    berth="answers FAILED_PRECONDITION naming the container: its rootfs lowers are the image's "
    "snapshots (docs/cri-behaviour.md)",
)
def test_remove_image_in_use(cri: CriClient, e2e_images: dict[str, PushedImage],
                             pulled: list[str], tmp_path: Path) -> None:
    img = e2e_images["user-uid"]
    pull(cri, img.ref, pulled)
    with sandbox(cri, str(tmp_path)) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, img.ref, ["sleep", "600"], "c"))
        with pytest.raises(grpc.RpcError) as err:
            cri.image.RemoveImage(cri.pb.RemoveImageRequest(image=cri.pb.ImageSpec(image=img.ref)),
                                  timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert cid[:12] in (err.value.details() or "")
        assert status(cri, img.ref).HasField("image")
