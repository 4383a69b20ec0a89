"""Copy a hijacked attach/exec connection to the terminal, and the terminal's stdin into it."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import termios
import threading
import tty as ttymod
from collections.abc import Iterator
from typing import Any

from docker.utils.socket import frames_iter

STDOUT, STDERR = 1, 2


def raw_socket(hijacked: Any) -> socket.socket:
    """docker-py hands back a SocketIO around the connection's socket; we want the socket."""
    return getattr(hijacked, "_sock", hijacked)


def _pump_stdin(sock: socket.socket) -> None:
    """stdin -> container until EOF, then half-close so the container sees EOF too."""
    try:
        while data := os.read(0, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the container went away first: nothing left to feed


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put a real terminal in raw mode for -t sessions, and always put it back."""
    if not (enabled and sys.stdin.isatty()):
        yield
        return
    saved = termios.tcgetattr(0)
    ttymod.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def relay(hijacked: Any, tty: bool, stdin: bool) -> None:
    """Run a session to its end: output demultiplexed (no TTY) or raw (TTY) to our stdio."""
    sock = raw_socket(hijacked)
    if stdin:
        threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    with raw_terminal(tty and stdin):
        for kind, data in frames_iter(sock, tty):
            target = err if kind == STDERR else out
            target.write(data)
            target.flush()
    sock.close()
