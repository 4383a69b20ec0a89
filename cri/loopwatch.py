"""Event-loop stall watchdog: how long the loop went without looking at new work, and why.

A thread reads the loop thread's CPU clock every INTERVAL. While the loop mostly waits for work
nothing else happens (pinging an idle loop 100 times a second cost 2 % of a core). When the
loop thread was busy for at least half an interval, the watchdog posts a no-op to the loop and
times the answer. A late answer alone proves little on a shared machine (the process may not
have been scheduled, or another thread held the GIL), so it reads the loop thread's CPU clock
across the wait: CPU the loop thread burnt while the ping waited is work done inside one loop
iteration, that is, a handler that blocked the loop (undercounted by at most one interval).
That figure is what tests and alerts look at.
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

INTERVAL = 0.02  # 100 wake-ups a second cost ~5 ms of CPU a second here; 50 cost half
STALL_WARN = 0.05  # seconds of loop-thread CPU in one iteration worth a log line
INNER_FRAMES = 4
_OURS = re.compile(r"/(berthd|cri|dockerapi|engine|runtime)/([^/]+/)?[^/]+\.py$")

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
        seen = time.clock_gettime(self._clock)
        while not self._stop.is_set():
            time.sleep(INTERVAL)  # not Event.wait: its lock dance tripled the idle cost
            now = time.clock_gettime(self._clock)
            busy, seen = now - seen, now
            if busy < INTERVAL / 2:
                continue  # the loop mostly waited for work: nothing is holding it
            if not self._ping():
                return
            seen = time.clock_gettime(self._clock)

    def _ping(self) -> bool:
        """Time one no-op through the loop; False once the loop or the watchdog is stopping."""
        answered = threading.Event()
        t0, c0 = time.monotonic(), time.clock_gettime(self._clock)
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed: berthd is shutting down
            return False
        where: list[str] = []
        while not answered.wait(STALL_WARN):
            if self._stop.is_set() or self.loop.is_closed():
                return False
            where = self._where()  # what the loop is doing: the log line names it
        lag, cpu = time.monotonic() - t0, time.clock_gettime(self._clock) - c0
        self.max_lag = max(self.max_lag, lag)
        self.observe(cpu)
        if cpu > self.max_stall_cpu:
            self.max_stall_cpu = cpu
            if cpu >= STALL_WARN:
                log.warning("event loop blocked", cpu_ms=round(cpu * 1e3), at=where)
        return True

    def _where(self) -> list[str]:
        """The loop thread's frames right now: Berth's own, then the innermost few."""
        frame = sys._current_frames().get(self._ident)
        if frame is None:
            return []
        stack = traceback.extract_stack(frame)
        ours = [f for f in stack[:-INNER_FRAMES] if _OURS.search(f.filename)]
        return [f"{f.filename}:{f.lineno} {f.name}" for f in ours + stack[-INNER_FRAMES:]]
