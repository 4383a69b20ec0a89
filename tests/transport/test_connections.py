"""Connection-level pressure: many idle connections, and a client that never reads."""

from __future__ import annotations

import contextlib

from tests.transport.rawh2 import RawConn

IDLE = 1000


def test_thousand_idle_connections(peer):
    """1,000 connections held open (half silent, half past the preface and then silent) while
    a fresh client calls Version. The process fd limit here is 20,000."""
    conns: list[RawConn] = []
    try:
        for n in range(IDLE):
            c = RawConn(peer.socket)
            conns.append(c)
            if n % 2:
                c.start()
        peer.answers()
    finally:
        for c in conns:
            c.close()


def test_client_that_never_reads(peer):
    """900 calls pipelined on one connection whose owner never reads its replies (and opened
    its windows, so only the socket buffer holds them back): other clients are still served."""
    with RawConn(peer.socket) as c:
        c.start()
        c.sock.settimeout(5.0)
        with contextlib.suppress(OSError):
            c.sock.sendall(b"".join(c.call(1 + 2 * n) for n in range(900)))
        peer.answers()  # while the connection that never reads is still open
