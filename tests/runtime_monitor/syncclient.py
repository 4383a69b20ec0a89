"""A blocking facade over runtime.containers.MonitorClient, for the monitor tests: they drive
the monitor from plain threads (and from subprocesses that have no event loop); berthd itself
only uses the asyncio client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from runtime.containers import (
    MAX_OUTPUT,
    ContainerState,
    ExecResult,
    MonitorClient,
    ensure_monitor,
)

T = TypeVar("T")


class SyncMonitorClient:
    """Blocking facade over MonitorClient, running it on a private event-loop thread."""

    def __init__(self, client: MonitorClient, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self.aio, self._loop, self._thread = client, loop, thread

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def create(self, id: str, spec: dict[str, Any], rootfs: str, cgroup_path: str = "",
               log_path: str = "", tty: bool = False, stdin: bool = False,
               stdin_once: bool = False,
               overlay: dict[str, Any] | None = None) -> ContainerState:
        """See MonitorClient.create."""
        return self._run(self.aio.create(id, spec, rootfs, cgroup_path, log_path, tty, stdin,
                                         stdin_once, overlay))

    def start(self, id: str) -> ContainerState:
        """See MonitorClient.start."""
        return self._run(self.aio.start(id))

    def state(self, id: str) -> ContainerState:
        """See MonitorClient.state."""
        return self._run(self.aio.state(id))

    def list(self) -> list[ContainerState]:
        """See MonitorClient.list."""
        return self._run(self.aio.list())

    def kill(self, id: str, sig: int = signal.SIGTERM) -> None:
        """See MonitorClient.kill."""
        self._run(self.aio.kill(id, sig))

    def stop(self, id: str, timeout: float, sig: int = signal.SIGTERM) -> ContainerState:
        """See MonitorClient.stop."""
        return self._run(self.aio.stop(id, timeout, sig))

    def wait(self, id: str, timeout: float | None = None) -> ContainerState:
        """See MonitorClient.wait; timeout bounds the caller's wait only."""
        return self._run(self.aio.wait(id), timeout)

    def delete(self, id: str) -> None:
        """See MonitorClient.delete."""
        self._run(self.aio.delete(id))

    def exec_sync(self, id: str, process: dict[str, Any], timeout: float,
                  max_output: int = MAX_OUTPUT) -> ExecResult:
        """See MonitorClient.exec_sync."""
        return self._run(self.aio.exec_sync(id, process, timeout, max_output))

    def reopen_log(self, id: str) -> None:
        """See MonitorClient.reopen_log."""
        self._run(self.aio.reopen_log(id))

    def resize(self, id: str, width: int, height: int) -> None:
        """See MonitorClient.resize."""
        self._run(self.aio.resize(id, width, height))

    def update(self, id: str, resources: dict[str, Any]) -> None:
        """See MonitorClient.update."""
        self._run(self.aio.update(id, resources))

    def stats(self, id: str) -> dict[str, Any]:
        """See MonitorClient.stats."""
        return self._run(self.aio.stats(id))

    def shutdown(self) -> None:
        """See MonitorClient.shutdown; this client is closed afterwards."""
        self._run(self.aio.shutdown())
        self.close()

    def ping(self) -> dict[str, Any]:
        """See MonitorClient.ping."""
        return self._run(self.aio.ping())

    def close(self) -> None:
        """Close the connection and stop the private loop."""
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def ensure_monitor_sync(state_dir: str, run_dir: str,
                        spawner: str | None = None) -> SyncMonitorClient:
    """ensure_monitor for threaded callers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="berth-monitor-client", daemon=True)
    thread.start()
    try:
        client = asyncio.run_coroutine_threadsafe(
            ensure_monitor(state_dir, run_dir, spawner), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        raise
    return SyncMonitorClient(client, loop, thread)
