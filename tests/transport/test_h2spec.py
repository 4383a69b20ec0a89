"""h2spec's http2 section against berthd and containerd, side by side (docs/transport.md).

berthd's HTTP/2 is grpc core's (grpcio). grpc core is lenient where RFC 9113 asks for a
connection error: every failure below is one of these kinds, none is a crash, a hang or
unbounded memory (tests/transport's battery checks those). A failure outside the list fails
the test after one slower re-run of that test id (a loaded machine can turn a pass into a
timeout).
"""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.transport import h2spec

# Not a gRPC call: h2spec's requests carry no `content-type: application/grpc` and no
# length-prefixed message, so grpc core refuses the stream (RST_STREAM) where h2spec wants a
# response with a body; grpc-go answers such a request with an HTTP 415 that has one.
NOT_GRPC = {"http2/4.2/1", "http2/6.5.3/1", "http2/6.9.1/1", "http2/6.9.1/3", "http2/6.9.2/1",
            "http2/6.9.2/2", "http2/6.10/1"}
# grpc core answers a connection error with a stream error (RST_STREAM, same code) and keeps
# the connection: malformed requests, frames on half-closed/closed streams, self-dependency.
STREAM_NOT_CONNECTION = {
    "http2/5.1/1", "http2/5.1/5", "http2/5.1/6", "http2/5.1/8", "http2/5.1/9", "http2/5.3.1/1",
    "http2/5.3.1/2", "http2/6.1/2", "http2/6.2/4", "http2/6.3/2", "http2/8.1.2/1",
    "http2/8.1.2.1/1", "http2/8.1.2.1/2", "http2/8.1.2.1/4", "http2/8.1.2.2/1",
    "http2/8.1.2.2/2", "http2/8.1.2.3/1", "http2/8.1.2.3/2", "http2/8.1.2.3/3",
    "http2/8.1.2.3/4", "http2/8.1.2.3/5", "http2/8.1.2.3/6", "http2/8.1.2.3/7",
    "http2/8.1.2.6/1", "http2/8.1.2.6/2"}
# grpc core drops frames it has no use for instead of a connection error: frames on idle or
# closed streams or on stream 0, even or backward stream ids, PUSH_PROMISE from a client,
# PING/GOAWAY on a stream, a bad pad length, an over-large connection window, a PING ACK
# nobody asked for, a HEADERS frame larger than SETTINGS_MAX_FRAME_SIZE.
IGNORED = {
    "http2/4.2/3", "http2/5.1/2", "http2/5.1/3", "http2/5.1/11", "http2/5.1/12", "http2/5.1/13",
    "http2/5.1.1/1", "http2/5.1.1/2", "http2/5.4.1/1", "http2/6.1/1", "http2/6.1/3",
    "http2/6.2/3", "http2/6.3/1", "http2/6.4/1", "http2/6.4/2", "http2/6.7/3", "http2/6.8/1",
    "http2/6.9.1/2", "http2/8.2/1"}
# grpc core closes the connection on a PING with undefined flags or a reserved bit set, where
# RFC 9113 says to ignore both.
STRICTER = {"http2/4.1/2", "http2/4.1/3"}
KNOWN = NOT_GRPC | STREAM_NOT_CONNECTION | IGNORED | STRICTER

pytestmark = pytest.mark.skipif(not h2spec.H2SPEC.exists(),
                                reason=f"h2spec binary absent at {h2spec.H2SPEC} "
                                       "(CI puts a copy of shared/ beside the clone)")


@pytest.fixture(scope="module")
def reports(berthd, containerd_instance, tmp_path_factory):
    """Both runs at once (each is mostly waiting on timeouts)."""
    out = tmp_path_factory.mktemp("h2spec")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        b = pool.submit(h2spec.run, berthd.socket, out / "berth.xml")
        c = pool.submit(h2spec.run, containerd_instance.socket, out / "containerd.xml")
        return {"berth": b.result(), "containerd": c.result(), "dir": out}


def test_berthd_h2spec_failures_are_known(reports, berthd):
    berth = reports["berth"]
    unknown = {}
    for sid, text in sorted(berth.failed.items()):
        if sid in KNOWN:
            continue
        again = h2spec.run(berthd.socket, reports["dir"] / "retry.xml", spec=sid, timeout=10)
        if again.failed:
            unknown[sid] = text
    print(f"h2spec http2: berthd {berth.summary}, containerd {reports['containerd'].summary}")
    assert not unknown, f"h2spec failures outside the documented list: {unknown}"
    berthd.client().version(timeout=10)


@pytest.mark.xfail(strict=True, reason="grpc core's leniency (the list above) passes 41 of "
                   "h2spec's http2 tests where containerd's grpc-go passes 66; issue 17 asks for "
                   "at least containerd's count, which grpcio cannot reach")
def test_berthd_passes_at_least_what_containerd_passes(reports):
    berth, ctrd = reports["berth"], reports["containerd"]
    assert len(berth.passed) >= len(ctrd.passed), f"berthd {berth.summary}, containerd " \
        f"{ctrd.summary}"
