"""One berthd per module, set up with objects in every state for the corpus to aim at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.badinput.env import Env
from tests.fixtures.berthd import BERTHD, run_berthd
from tests.fixtures.images import PushedImage
from tests.fixtures.registry import Registry


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry,
    e2e_images: dict[str, PushedImage],
) -> Iterator[Env]:
    if not BERTHD.exists():
        pytest.skip(f"{BERTHD} not installed")
    work = tmp_path_factory.mktemp("badinput")
    with run_berthd(work / "berthd", registry={"insecure": [registry.host]}) as d:
        e = Env(berthd=d, client=d.client(), tmp=work, image=e2e_images["busybox"].ref,
                registry=registry.host)
        try:
            e.setup()
            yield e
            e.remove_everything()
        finally:
            e.drop_cgroup_parent()
