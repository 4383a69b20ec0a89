"""First light: the system endpoints and one container run to completion."""

from __future__ import annotations


def test_ping_version(dclient):
    assert dclient.ping() is True
    v = dclient.version()
    assert v["ApiVersion"] == "1.41" and v["Os"] == "linux"


def test_run_to_completion(dclient, busybox, cleanup):
    cleanup.append("smoke")
    out = dclient.containers.run(busybox, ["sh", "-c", "echo hello; echo oops >&2"],
                                 name="smoke", stderr=True)
    assert b"hello" in out
