"""The table on stdout, every sample in JSON, and the distributions as a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.stats import Row, percentile

HEADER = ("metric", "unit", "berth p50", "berth p90", "containerd p50", "containerd p90",
          "ratio", "target", "met")


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def table(rows: list[Row]) -> str:
    """A Markdown table, so the same text goes to stdout and into docs/performance.md."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        cells = [r.metric, r.unit, _fmt(percentile(r.berth, 50)), _fmt(percentile(r.berth, 90)),
                 _fmt(percentile(r.peer, 50)), _fmt(percentile(r.peer, 90)), _fmt(r.ratio),
                 f"≤ {r.target:g}×" if r.target is not None else "-", r.met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(rows: list[Row], out: Path, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "rows": [
        {"metric": r.metric, "unit": r.unit, "target": r.target, "note": r.note,
         "ratio": r.ratio, "met": r.met, "berth": r.berth, "containerd": r.peer} for r in rows]}
    (out / "results.json").write_text(json.dumps(data, indent=1))
    (out / "table.md").write_text(table(rows) + "\n")
    plot(rows, out / "results.png")


def plot(rows: list[Row], path: Path) -> None:
    """One panel per metric, berth and containerd side by side, so tails are visible too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(rows))
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.2 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.boxplot([r.berth or [math.nan], r.peer or [math.nan]], showfliers=True)
        ax.set_xticks([1, 2], ["berth", "containerd"])
        ax.set_title(r.metric, fontsize=9)
        ax.set_ylabel(r.unit)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
