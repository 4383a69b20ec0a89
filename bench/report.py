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


def _target(r: Row) -> str:
    if r.target is None:
        return "higher is better" if r.higher_is_better else "-"
    return f"{'≥' if r.higher_is_better else '≤'} {r.target:g}×"


def table(rows: list[Row]) -> str:
    """A Markdown table, so the same text goes to stdout and into docs/performance.md."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        name = r.metric if r.peer_name == "containerd" else f"{r.metric} (vs {r.peer_name})"
        cells = [name, r.unit, _fmt(percentile(r.berth, 50)), _fmt(percentile(r.berth, 90)),
                 _fmt(percentile(r.peer, 50)), _fmt(percentile(r.peer, 90)), _fmt(r.ratio),
                 _target(r), r.met]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.metric}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def write(rows: list[Row], out: Path, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "rows": [
        {"metric": r.metric, "unit": r.unit, "target": r.target, "note": r.note,
         "ratio": None if math.isnan(r.ratio) else r.ratio, "met": r.met,
         "higher_is_better": r.higher_is_better, "peer_name": r.peer_name,
         "berth": r.berth, "peer": r.peer} for r in rows]}
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
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.5 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.boxplot([r.berth or [math.nan], r.peer or [math.nan]], showfliers=True)
        ax.set_xticks([1, 2], ["berth", r.peer_name])
        title = r.metric if math.isnan(r.ratio) else f"{r.metric}\nratio {r.ratio:.2f}×"
        ax.set_title(title, fontsize=9)
        if not r.berth and not r.peer:
            ax.text(0.5, 0.5, r.note or "no samples", ha="center", va="center", wrap=True,
                    fontsize=8, transform=ax.transAxes)
        ax.set_ylabel(r.unit)
        ax.set_ylim(bottom=0)  # ratios read right only from a zero baseline
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
