"""Draw Docker's streamed pull progress: per-layer bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

BAR = 40


@dataclass
class PullView:
    """Keeps one line per layer id and redraws them in place (ANSI cursor-up) on a TTY."""

    out: TextIO = sys.stdout
    tty: bool = False
    lines: dict[str, str] = field(default_factory=dict)
    drawn: int = 0

    def feed(self, event: dict[str, Any]) -> None:
        """One decoded JSON progress message from POST /images/create."""
        if "error" in event:
            raise PullError(str(event.get("error")))
        status, layer = str(event.get("status", "")), event.get("id")
        if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
            self._flush_line(status if not layer else f"{layer}: {status}")
            return
        text = f"{layer}: {status}"
        detail = event.get("progressDetail") or {}
        if self.tty and detail.get("total"):
            text += " " + bar(int(detail.get("current", 0)), int(detail["total"]))
        if not self.tty:
            if self.lines.get(layer) != status:  # one plain line per state change
                print(text, file=self.out, flush=True)
            self.lines[layer] = status
            return
        self.lines[layer] = text
        self._redraw()

    def _flush_line(self, text: str) -> None:
        print(text, file=self.out, flush=True)
        if self.tty:
            self.drawn = 0  # the layer block starts again below this line
            self.lines.clear()

    def _redraw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        for text in self.lines.values():
            self.out.write("\x1b[2K" + text + "\n")
        self.drawn = len(self.lines)
        self.out.flush()


class PullError(RuntimeError):
    """The daemon reported an error inside the progress stream (the status was already 200)."""


def bar(current: int, total: int) -> str:
    """[=====>    ] 1.2MB/3.4MB, the shape docker draws."""
    done = min(BAR, BAR * current // max(total, 1))
    arrow = "=" * max(done - 1, 0) + (">" if done else "")
    return f"[{arrow.ljust(BAR)}] {current / 1e6:.1f}MB/{total / 1e6:.1f}MB"


def show_pull(events: Iterable[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """Render a whole pull stream; raises PullError on an in-stream error."""
    view = PullView(out=out, tty=out.isatty())
    for ev in events:
        view.feed(ev)
