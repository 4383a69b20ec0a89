"""Layer semantics as seen from inside a container: whiteouts, opaque dirs, modes, links."""

from __future__ import annotations

import grpc
import pytest

from critest.conftest import Pod
from tests.fixtures.images import PushedImage
from tests.fixtures.tree import LISTING_CMD, parse_listing, tree_problems

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.berth_pending("pods, containers and image pulls are not implemented yet"),
]


def test_layered_image_tree(pod: Pod, e2e_images: dict[str, PushedImage]) -> None:
    img = e2e_images["layers"]
    try:
        cid = pod.run(img.ref, ["sleep", "600"])
        res = pod.exec(cid, LISTING_CMD)
        assert res.exit_code == 0, res.stderr
        assert tree_problems(parse_listing(res.stdout.decode())) == []
    finally:
        req = pod.cri.pb.RemoveImageRequest(image=pod.cri.pb.ImageSpec(image=img.ref))
        try:
            pod.cri.image.RemoveImage(req, timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
