"""Layer semantics as seen from inside a container: whiteouts, opaque dirs, modes, links."""

from __future__ import annotations

import pytest

from critest.harness import Pod
from tests.fixtures.images import PushedImage
from tests.fixtures.tree import LISTING_CMD, parse_listing, tree_problems

pytestmark = pytest.mark.timeout(180)


def test_layered_image_tree(
    pulled: list[str], pod: Pod, e2e_images: dict[str, PushedImage]
) -> None:
    img = e2e_images["layers"]
    pulled.append(img.ref)
    cid = pod.run(img.ref, ["sleep", "600"])
    res = pod.exec(cid, LISTING_CMD)
    assert res.exit_code == 0, res.stderr
    assert tree_problems(parse_listing(res.stdout.decode())) == []
