"""Disk usage of directory trees, and a background scanner that keeps a set of them fresh.

A walk of a container's upper dir costs one lstat per file: with 100 containers of a few
thousand files each that is hundreds of milliseconds, far too long for an RPC handler on the
event loop. The scanner walks in its own thread every `period` seconds (the cAdvisor and
containerd approach) and callers read the last result with the time it was taken.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Bytes allocated (st_blocks) and inodes used by one tree, as of taken_ns (wall clock)."""

    bytes: int
    inodes: int
    taken_ns: int


def du(path: str) -> tuple[int, int]:
    """(bytes, inodes) of the tree at path, hard-linked inodes counted once; (0, 0) if absent.

    Not counted: path itself, as `du` of an overlay upper dir or a snapshot's fs/ would not."""
    size = 0
    seen: set[int] = set()
    stack = [path]
    while stack:
        top = stack.pop()
        with contextlib.suppress(OSError), os.scandir(top) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                    size += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
    return size, len(seen)


class UsageScanner:
    """Walks every tracked tree each period in one daemon thread; new trees without waiting.

    `track()` is called from the event loop with the current set of trees; `get()` never walks.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._paths: dict[str, str] = {}
        self._results: dict[str, Usage] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.full_scans = 0  # completed passes over every tracked tree (tests wait on it)

    def track(self, paths: dict[str, str]) -> None:
        """Replace the tracked set (key -> dir); trees not scanned yet are walked right away."""
        self._paths = dict(paths)
        if any(k not in self._results for k in paths):
            self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="usage-scan", daemon=True)
            self._thread.start()

    def get(self, key: str) -> Usage | None:
        """The last walk of key's tree, or None before its first walk finished."""
        return self._results.get(key)

    def stop(self) -> None:
        """End the thread (it finishes the walk in progress first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        last_full = 0.0
        while not self._stop.is_set():
            paths = self._paths
            full = time.monotonic() - last_full >= self.period
            if full:
                last_full = time.monotonic()
            results = {k: v for k, v in self._results.items() if k in paths}
            for key, path in paths.items():
                if self._stop.is_set():
                    return
                if full or key not in results:
                    results[key] = Usage(*du(path), time.time_ns())
            self._results = results
            if full:
                self.full_scans += 1
            self._wake.wait(max(0.0, self.period - (time.monotonic() - last_full)))
            self._wake.clear()
