"""Percentiles and ratios: every figure is a ratio against containerd from the same run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank on sorted data; enough for ≥ 20 samples and free of interpolation debates."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    metric: str
    unit: str
    berth: list[float]
    peer: list[float]
    target: float | None  # berth/peer ratio to meet, None = report only
    note: str = ""
    higher_is_better: bool = False  # throughput: the ratio must reach the target, not stay under
    peer_name: str = "containerd"  # the reference when it is not containerd (runc, crun, plugins)

    @property
    def ratio(self) -> float:
        b, p = percentile(self.berth, 50), percentile(self.peer, 50)
        return b / p if p else math.nan

    @property
    def met(self) -> str:
        if self.target is None or math.isnan(self.ratio):
            return "-"
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "met" if ok else "not met"
