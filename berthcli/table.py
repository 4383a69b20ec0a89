"""Docker-style column output and the human forms of sizes and ages."""

from __future__ import annotations

import time
from datetime import datetime


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns, three spaces apart, as `docker ps` prints them."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    for line in [headers, *rows]:
        print("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def human_size(n: float) -> str:
    """Decimal units, as docker prints image sizes (1 MB = 1000 kB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


def ago(when: float | str) -> str:
    """'5 seconds ago' from a Unix time or an RFC 3339 timestamp."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when[:26].rstrip("Z") + "+00:00").timestamp()
    secs = max(0, int(time.time() - when))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{secs} seconds ago"
