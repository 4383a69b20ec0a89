"""Container logs: kubelet-style path, CRI log line format, ReopenContainerLog."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from critest.harness import Pod
from critest.util import container_config, create, status, wait_exited
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)

# RFC3339Nano as Go formats it: fraction optional (trailing zeros trimmed), Z or an offset
_LINE = re.compile(
    rb"^(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})) "
    rb"(?P<stream>stdout|stderr) (?P<tag>[PF]) (?P<msg>.*)$"
)


@dataclass(frozen=True)
class LogLine:
    """One parsed CRI log line."""

    time: datetime
    stream: str
    tag: str
    msg: bytes


def parse_ts(text: str) -> datetime:
    """RFC3339Nano to an aware datetime (Python keeps microseconds only)."""
    head, _, rest = text.partition(".")
    frac, zone = "", rest
    if rest:
        m = re.match(r"(\d+)(.*)", rest)
        assert m is not None
        frac, zone = m.group(1), m.group(2)
    else:
        head, zone = text[:19], text[19:]
    stamp = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S")
    tz = UTC if zone == "Z" else datetime.strptime(zone, "%z").tzinfo
    return stamp.replace(microsecond=int((frac + "000000")[:6]), tzinfo=tz)


def parse_log(path: Path) -> list[LogLine]:
    out = []
    for raw in path.read_bytes().splitlines():
        m = _LINE.match(raw)
        assert m, f"not a CRI log line: {raw!r}"
        out.append(LogLine(parse_ts(m["ts"].decode()), m["stream"].decode(), m["tag"].decode(),
                           m["msg"]))
    return out


@pytest.fixture
def busybox(pulled: list[str], e2e_images: dict[str, PushedImage]) -> str:
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    return ref


def test_log_path_and_cri_format(busybox: str, pod: Pod) -> None:
    cri = pod.cri
    script = "echo hello World; echo oops >&2; printf 'no newline'"
    cfg = container_config(cri, busybox, ["sh", "-c", script], "logger", log_path="logger/0.log")
    before = datetime.now(UTC)
    cid = create(cri, pod.id, pod.config, cfg)
    assert wait_exited(cri, cid).exit_code == 0
    path = Path(pod.config.log_directory) / "logger" / "0.log"
    assert status(cri, cid).log_path == str(path)
    lines = parse_log(path)
    by_stream = {s: [ln for ln in lines if ln.stream == s] for s in ("stdout", "stderr")}
    assert [(ln.tag, ln.msg) for ln in by_stream["stderr"]] == [("F", b"oops")]
    out = by_stream["stdout"]
    assert (out[0].tag, out[0].msg) == ("F", b"hello World")
    assert b"".join(ln.msg for ln in out[1:]) == b"no newline"
    for ln in lines:
        assert abs((ln.time - before).total_seconds()) < 60, ln


def test_long_line_is_split_into_partials(busybox: str, pod: Pod) -> None:
    """A line longer than the runtime's buffer becomes P...P F lines that join back up."""
    cri = pod.cri
    script = "head -c 40000 /dev/zero | tr '\\0' x; echo"
    cfg = container_config(cri, busybox, ["sh", "-c", script], "long", log_path="long/0.log")
    cid = create(cri, pod.id, pod.config, cfg)
    wait_exited(cri, cid)
    lines = parse_log(Path(pod.config.log_directory) / "long" / "0.log")
    assert [ln.tag for ln in lines][-1] == "F"
    assert all(ln.tag == "P" for ln in lines[:-1])
    assert b"".join(ln.msg for ln in lines) == b"x" * 40000
    assert len(lines) > 1


def test_reopen_container_log(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"
    cfg = container_config(cri, busybox, ["sh", "-c", script], "rot", log_path="rot/0.log")
    cid = create(cri, pod.id, pod.config, cfg)
    path = Path(pod.config.log_directory) / "rot" / "0.log"
    _wait(lambda: path.exists() and path.stat().st_size > 0)
    rotated = path.with_name("0.log.1")
    path.rename(rotated)
    cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=30)
    _wait(lambda: path.exists() and len(parse_log(path)) >= 2)
    size = rotated.stat().st_size
    time.sleep(0.5)
    assert rotated.stat().st_size == size, "the rotated file must no longer be written"
    old_last = int(parse_log(rotated)[-1].msg.split()[1])
    new_first = int(parse_log(path)[0].msg.split()[1])
    assert new_first >= old_last + 1


def test_reopen_log_of_stopped_container_fails(busybox: str, pod: Pod) -> None:
    cri, pb = pod.cri, pod.cri.pb
    cfg = container_config(cri, busybox, ["true"], "gone", log_path="gone/0.log")
    cid = create(cri, pod.id, pod.config, cfg)
    wait_exited(cri, cid)
    with pytest.raises(grpc.RpcError) as err:
        cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNKNOWN)


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
