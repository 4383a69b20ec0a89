"""`python -m runtime.images.unpack_worker FD SNAPSHOT_ROOT`: an unpack worker's entry point.

Its watchdog starts before the unpacker's imports, which take ~90 ms of CPU (seconds on a busy
node): a worker whose berthd died meanwhile exits at once, since the watchdog needs almost no
CPU. The root only names the worker's store in `ps`.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading


def _watch(fd: int) -> None:
    """Exit the moment berthd closes the socket or dies, even in the middle of a layer: a
    berthd started after a crash must not find this still writing."""
    p = select.poll()
    p.register(fd, select.POLLRDHUP)
    while not p.poll():
        pass
    os._exit(0)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    threading.Thread(target=_watch, args=(sock.fileno(),), daemon=True).start()
    from runtime.images.unpack_child import serve  # noqa: PLC0415 - after the watchdog starts

    serve(sock)


if __name__ == "__main__":
    main()
