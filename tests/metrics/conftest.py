"""A berthd with its metrics endpoint on a free loopback port, shared by the metrics tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures._proc import free_port
from tests.fixtures.berthd import BERTHD, Berthd, run_berthd
from tests.fixtures.registry import Registry


@pytest.fixture(scope="module")
def metrics_berthd(tmp_path_factory: pytest.TempPathFactory,
                   registry: Registry) -> Iterator[Berthd]:
    if not BERTHD.exists():
        pytest.skip(f"{BERTHD} not installed")
    port = free_port()
    with run_berthd(Path(tmp_path_factory.mktemp("metrics")) / "b",
                    registry={"insecure": [registry.host]},
                    metrics={"address": f"127.0.0.1:{port}"}) as d:
        d.metrics_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield d
