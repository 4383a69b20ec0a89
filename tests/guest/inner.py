"""pytest plugin for the run inside the v2 guest: timeouts stretched for TCG.

Software emulation runs 20-35x slower than the host, so a test's own `timeout` mark (sized for
the host) and the fixtures' waits for daemons are multiplied by BERTH_TEST_SLOWDOWN (set to 15
here unless given); the guest's own timeout still bounds the whole run.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures._proc import slowdown


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("BERTH_TEST_SLOWDOWN", "15")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scale = slowdown()
    default = float(config.getini("timeout") or 300)
    for item in items:
        mark = item.get_closest_marker("timeout")
        base = float(mark.args[0]) if mark and mark.args else default
        item.add_marker(pytest.mark.timeout(base * scale))
