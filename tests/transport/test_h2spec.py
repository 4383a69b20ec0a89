"""h2spec's http2 section against berthd and containerd, side by side (docs/transport.md).

berthd's HTTP/2 is python-hyper's h2, which answers every case of the section as RFC 9113
asks; issue 17 asks for at least containerd's count. A failure fails the test after one slower
re-run of that test id (a loaded machine can turn a pass into a timeout).
"""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.transport import h2spec

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


def _confirmed_failures(reports, berthd) -> dict[str, str]:
    """berthd's failures that a slower re-run of the same test id confirms."""
    failed = {}
    for sid, text in sorted(reports["berth"].failed.items()):
        again = h2spec.run(berthd.socket, reports["dir"] / "retry.xml", spec=sid, timeout=10)
        if again.failed:
            failed[sid] = text
    return failed


def test_berthd_passes_every_h2spec_case(reports, berthd):
    failed = _confirmed_failures(reports, berthd)
    print(f"h2spec http2: berthd {reports['berth'].summary}, containerd "
          f"{reports['containerd'].summary}")
    assert not failed, f"h2spec failures: {failed}"
    berthd.client().version(timeout=10)


def test_berthd_passes_at_least_what_containerd_passes(reports, berthd):
    passed = len(reports["berth"].passed) + len(reports["berth"].failed) \
        - len(_confirmed_failures(reports, berthd))
    ctrd = reports["containerd"]
    assert passed >= len(ctrd.passed), f"berthd {passed} passed, containerd {ctrd.summary}"
