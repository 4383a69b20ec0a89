"""Invalid SETTINGS values: the connection ends with a connection error, the daemon lives on."""

from __future__ import annotations

import pytest

from tests.transport.rawh2 import (
    FLOW_CONTROL_ERROR,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PROTOCOL_ERROR,
    RawConn,
)

READ = 10.0  # seconds to wait for the server's verdict on one connection


@pytest.mark.parametrize("setting, value, error", [
    (MAX_FRAME_SIZE, 0, PROTOCOL_ERROR),  # below 2^14 (RFC 9113 6.5.2)
    (MAX_FRAME_SIZE, 1 << 24, PROTOCOL_ERROR),  # above 2^24-1
    (INITIAL_WINDOW_SIZE, 1 << 31, FLOW_CONTROL_ERROR),  # above 2^31-1
], ids=["frame-size-0", "frame-size-2^24", "window-2^31"])
def test_invalid_setting_ends_the_connection(peer, setting, value, error):
    """A call sent after the bad value must not be served; the connection gets GOAWAY.

    containerd differs on MAX_FRAME_SIZE: grpc-go never checks the value (its frames stay at
    16 KiB whatever the peer says), so there the call must simply be answered correctly."""
    with RawConn(peer.socket) as c:
        c.start([(setting, value)], open_window=False)  # the bad value alone in its frame
        c.send(c.call(1))
        out = c.read(READ, until_streams={1})
        if peer.name == "containerd" and setting == MAX_FRAME_SIZE:
            assert not out.ended and out.statuses() == {1: "0"}
            return
    assert out.ended, f"{peer.name} kept the connection after SETTINGS {setting}={value}"
    if out.goaway is not None:
        assert out.goaway == error, f"GOAWAY error {out.goaway}, RFC 9113 says {error}"


def test_max_frame_size_zero_regression(peer):
    """Issue 17: SETTINGS_MAX_FRAME_SIZE=0 then a call wedged the hand-written server (calls
    timed out, RSS grew tens of MB/s, SIGTERM ignored). The peer fixture's checks (fresh Version
    in 10 s, RSS bound, SIGTERM in 20 s) fail, never hang, on such a server."""
    conns = [RawConn(peer.socket) for _ in range(3)]
    try:
        for c in conns:
            c.start([(MAX_FRAME_SIZE, 0)], open_window=False)
            c.send(c.call(1) + c.call(3))
        for c in conns:
            c.read(READ, until_streams={1, 3})
        peer.answers()  # while the bad connections may still be open
    finally:
        for c in conns:
            c.close()
