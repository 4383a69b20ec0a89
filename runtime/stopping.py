"""Stopping a container with a grace period, and what happens when the caller gives up.

The rule (docs/monitor.md, "Stop"): the stop signal goes to the container's init, the caller
waits up to `timeout` for it to exit, then the whole cgroup is SIGKILLed and drained (execs and
their children included) before the container is reported stopped. The waiting happens here, in
the caller's task, not inside the monitor: when the caller is cancelled (a CRI client whose
deadline was shorter than the timeout), the stop is abandoned as containerd abandons it. The
signal has been delivered, nothing is SIGKILLed, the container keeps running if it ignored the
signal, and kubelet retries later with its own grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from runtime.containers import InvalidState, MonitorClient
from runtime.monitor.state import RUNNING, ContainerState


async def graceful_stop(monitor: MonitorClient, cid: str, timeout: float,
                        sig: int = signal.SIGTERM) -> ContainerState:
    """sig, up to timeout for the exit, then SIGKILL to everything left in the cgroup."""
    if timeout > 0 and (await monitor.state(cid)).status == RUNNING:
        with contextlib.suppress(InvalidState):  # it exited meanwhile
            await monitor.kill(cid, sig)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(monitor.wait(cid), timeout)
    return await monitor.stop(cid, timeout=0, sig=signal.SIGKILL)
