"""pytest plugin for the run inside the v2 guest: per-test timeouts stretched for TCG.

Software emulation runs 20-35x slower than the host, so a test's own `timeout` mark (sized for
the host) is multiplied by BERTH_GUEST_TIMEOUT_SCALE (default 15); the guest's own timeout
still bounds the whole run.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scale = float(os.environ.get("BERTH_GUEST_TIMEOUT_SCALE", "15"))
    default = float(config.getini("timeout") or 300)
    for item in items:
        mark = item.get_closest_marker("timeout")
        base = float(mark.args[0]) if mark and mark.args else default
        item.add_marker(pytest.mark.timeout(base * scale))
