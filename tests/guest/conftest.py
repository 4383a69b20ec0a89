"""Puts the guest stage's wall time and log path into the suite's closing summary."""

from __future__ import annotations

import pytest

SUMMARY: list[str] = []  # filled by the guest_run fixture


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
