"""Event-loop stall watchdog: how long the loop went without looking at new work, and why.

A thread posts a no-op to the loop every INTERVAL and times the answer. A late answer alone
proves little on a shared machine (the process may simply not have been scheduled, or another
thread held the GIL), so the watchdog also reads the loop thread's own CPU clock across the
wait: CPU the loop thread burnt while the ping waited is work done inside one loop iteration,
that is, a handler that blocked the loop. That figure is what tests and alerts look at.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable

import structlog

INTERVAL = 0.01
STALL_WARN = 0.05  # seconds of loop-thread CPU in one iteration worth a log line
INNER_FRAMES = 4
_OURS = re.compile(r"/(cri|runtime)/[^/]+\.py$|/(cri|runtime)/\w+/[^/]+\.py$")

log = structlog.get_logger("loopwatch")


class LoopWatch:
    """Started on the loop's own thread; the thread is a daemon and never touches loop state."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 observe: Callable[[float], None] = lambda _cpu: None) -> None:
        self.loop = loop
        self.observe = observe  # called with the loop-thread CPU seconds of every ping
        self._ident = threading.get_ident()  # this is the loop's thread
        self._clock = time.pthread_getcpuclockid(self._ident)
        self.max_lag = 0.0  # seconds a ping waited, worst so far
        self.max_stall_cpu = 0.0  # loop-thread CPU seconds while one ping waited, worst so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            answered = threading.Event()
            t0, c0 = time.monotonic(), time.clock_gettime(self._clock)
            try:
                self.loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed: berthd is shutting down
                return
            where: list[str] = []
            while not answered.wait(STALL_WARN):
                if self._stop.is_set() or self.loop.is_closed():
                    return
                where = self._where()  # what the loop is doing: the log line names it
            lag, cpu = time.monotonic() - t0, time.clock_gettime(self._clock) - c0
            self.max_lag = max(self.max_lag, lag)
            self.observe(cpu)
            if cpu > self.max_stall_cpu:
                self.max_stall_cpu = cpu
                if cpu >= STALL_WARN:
                    log.warning("event loop blocked", cpu_ms=round(cpu * 1e3), at=where)

    def _where(self) -> list[str]:
        """The loop thread's frames right now: Berth's own, then the innermost few."""
        frame = sys._current_frames().get(self._ident)
        if frame is None:
            return []
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack[:-INNER_FRAMES] if _OURS.search(f.filename)]
        return [f"{f.filename}:{f.lineno} {f.name}" for f in ours + stack[-INNER_FRAMES:]]
