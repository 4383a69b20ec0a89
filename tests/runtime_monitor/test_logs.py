"""CRI log format, reopen after rotation, tty output and resize, attach with stdin_once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.logs import MAX_LINE, CriLogWriter, join_lines, parse_log, parse_timestamp
from tests.fixtures.waits import until
from tests.runtime_monitor.conftest import spec

pytestmark = pytest.mark.timeout(60)
STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$"


def test_writer_splits_lines_and_tags_partials(tmp_path):
    w = CriLogWriter(str(tmp_path / "log"))
    w.write("stdout", b"one\ntw")
    w.write("stderr", b"err\n")
    w.write("stdout", b"o\n" + b"x" * (MAX_LINE + 10) + b"\nlast")
    w.close()
    recs = parse_log((tmp_path / "log").read_bytes())
    got = [(r.stream, r.partial, len(r.content)) for r in recs]
    assert got == [("stdout", False, 3), ("stderr", False, 3), ("stdout", False, 3),
                   ("stdout", True, MAX_LINE), ("stdout", False, 10), ("stdout", True, 4)]
    assert join_lines(recs, "stdout") == [b"one", b"two", b"x" * (MAX_LINE + 10), b"last"]
    stamps = [parse_timestamp(r.timestamp) for r in recs]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time_ns()) < 10**10
    assert all(re.match(STAMP, r.timestamp) for r in recs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_writer_round_trips_any_chunking(tmp_path_factory, chunks):
    path = tmp_path_factory.mktemp("prop") / "log"
    w = CriLogWriter(str(path), max_line=8)
    for chunk in chunks:
        w.write("stdout", chunk)
    w.close()
    data = b"".join(chunks)
    recs = parse_log(path.read_bytes())
    assert all(len(r.content) <= 8 and b"\n" not in r.content for r in recs)
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert join_lines(recs) == expected


def test_container_log_both_streams(mon, rootfs, tmp_path):
    c, log = mon.client, tmp_path / "pods" / "c1.log"
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf tail"
    c.create("c1", spec("sh", "-c", script), str(rootfs), log_path=str(log))
    c.start("c1")
    assert c.wait("c1", timeout=10).exit_code == 0
    recs = parse_log(log.read_bytes())
    assert join_lines(recs, "stdout") == [b"out1", b"out2", b"out3", b"tail"]
    assert join_lines(recs, "stderr") == [b"err1", b"err2", b"err3"]
    assert recs[-1].partial or any(r.partial and r.content == b"tail" for r in recs)


def test_reopen_after_rename(mon, rootfs, tmp_path):
    c, log = mon.client, tmp_path / "c1.log"
    script = "i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); usleep 20000; done"
    c.create("c1", spec("sh", "-c", script), str(rootfs), log_path=str(log))
    c.start("c1")
    time.sleep(0.3)
    os.rename(log, tmp_path / "c1.log.1")
    c.reopen_log("c1")
    assert log.exists()
    c.wait("c1", timeout=10)
    old = join_lines(parse_log((tmp_path / "c1.log.1").read_bytes()))
    new = join_lines(parse_log(log.read_bytes()))
    assert old and new
    assert old + new == [f"line{i}".encode() for i in range(40)]


def test_reopen_on_stopped_container_does_not_hang(mon, rootfs, tmp_path):
    c = mon.client
    c.create("c1", spec("true"), str(rootfs), log_path=str(tmp_path / "c1.log"))
    c.start("c1")
    c.wait("c1", timeout=10)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="not running"):
        c.reopen_log("c1")
    assert time.monotonic() - t0 < 1


def test_tty_output_and_resize(mon, rootfs, tmp_path):
    """The monitor's pty is the container's stdio and console; its output is logged as stdout."""
    c, log = mon.client, tmp_path / "c1.log"
    s = spec("sh", "-c", "sleep 0.5; stty size; echo done", terminal=True)
    c.create("c1", s, str(rootfs), log_path=str(log), tty=True)
    c.start("c1")
    c.resize("c1", 123, 45)
    assert c.wait("c1", timeout=10).exit_code == 0
    recs = parse_log(log.read_bytes())
    assert {r.stream for r in recs} == {"stdout"}
    assert [line.rstrip(b"\r") for line in join_lines(recs)] == [b"45 123", b"done"]


def test_attach_stdin_once_and_fanout(mon, rootfs, tmp_path):
    c, log = mon.client, tmp_path / "c1.log"
    c.create("c1", spec("sh", "-c", "while read l; do echo got $l; done; echo bye"),
             str(rootfs), log_path=str(log), stdin=True, stdin_once=True)
    c.start("c1")

    async def session():
        watcher = await c.aio.attach("c1")
        s = await c.aio.attach("c1", stdin=True)
        await s.send_stdin(b"a\nb\n")
        got = b""
        while b"got b\n" not in got:
            frame = await asyncio.wait_for(s.recv(), 5)
            assert frame is not None
            got += frame[1]
        await s.close_stdin()
        while await asyncio.wait_for(s.recv(), 5) is not None:
            pass
        seen = b""
        while (frame := await asyncio.wait_for(watcher.recv(), 5)) is not None:
            seen += frame[1]
        s.close()
        watcher.close()
        return s.exit_code, watcher.exit_code, seen

    code, wcode, seen = c._run(session())
    assert (code, wcode) == (0, 0)
    assert seen == b"got a\ngot b\nbye\n"
    assert c.wait("c1", timeout=10).exit_code == 0
    assert join_lines(parse_log(log.read_bytes())) == [b"got a", b"got b", b"bye"]


def test_slow_attach_client_is_dropped(mon, rootfs, tmp_path):
    """A client that never reads is cut off; the log still gets everything (CVE-2025-64329)."""
    c, log = mon.client, tmp_path / "c1.log"
    c.create("c1", spec("sh", "-c", "sleep 0.3; head -c 30000000 /dev/zero | tr '\\0' 'a'"
                        " | fold -w 1000"), str(rootfs), log_path=str(log))
    c.start("c1")

    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    raw.connect(os.path.join(mon.run_dir, "monitor.sock"))
    raw.sendall(json.dumps({"rid": 1, "op": "attach", "id": "c1"}).encode() + b"\n")
    assert c.wait("c1", timeout=30).exit_code == 0
    lines = join_lines(parse_log(log.read_bytes()))
    assert len(lines) == 30000 and all(len(x) == 1000 for x in lines)
    received = 0
    raw.settimeout(5)
    while chunk := raw.recv(1 << 20):
        received += len(chunk)
    raw.close()
    assert received < 5_000_000  # cut off after ~1 MiB of backlog, not queued without bound


def test_attach_sessions_do_not_accumulate(mon, rootfs):
    """CVE-2025-64329: 100 attach/detach cycles leave the monitor's fd count unchanged."""
    c = mon.client
    c.create("c1", spec("sh", "-c", "while :; do echo tick; usleep 10000; done"), str(rootfs),
             stdin=True)
    c.start("c1")
    fds = len(os.listdir(f"/proc/{mon.pid}/fd"))

    async def cycles():
        for _ in range(100):
            s = await c.aio.attach("c1", stdin=True)
            await s.send_stdin(b"x\n")
            s.close()

    c._run(cycles())
    # the monitor closes each session as it sees it go
    until(lambda: len(os.listdir(f"/proc/{mon.pid}/fd")) == fds, 10, 0.05,
          what="the monitor's fd count back where it was")
    assert c.state("c1").status == "running"


def test_chatty_container_does_not_starve_the_monitor(mon, rootfs, tmp_path):
    """A container writing faster than the log keeps up must not monopolise the event loop."""
    c = mon.client
    c.create("c1", spec("yes"), str(rootfs), log_path=str(tmp_path / "c1.log"))
    c.start("c1")
    time.sleep(0.2)
    worst = 0.0
    for _ in range(10):
        t0 = time.monotonic()
        assert c.state("c1").status == "running"
        worst = max(worst, time.monotonic() - t0)
    c.stop("c1", 0)
    assert worst < 0.5, f"state() took {worst:.2f}s while a container spammed stdout"


def test_log_write_failure_does_not_hurt_the_container(mon, rootfs):
    """/dev/full fails every write with ENOSPC: output is dropped, the container runs on."""
    c = mon.client
    script = "i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); done; printf partial >&2"
    c.create("warm", spec("true"), str(rootfs))  # runtime.init keeps the host pid ns fd open
    c.start("warm")
    c.wait("warm", timeout=10)
    c.delete("warm")
    fds = len(os.listdir(f"/proc/{mon.pid}/fd"))
    c.create("c1", spec("sh", "-c", script), str(rootfs), log_path="/dev/full")
    c.start("c1")
    st = c.wait("c1", timeout=20)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert Path(mon.run_dir, "monitor.log").read_text().count("log write failed") == 1
    c.delete("c1")
    assert len(os.listdir(f"/proc/{mon.pid}/fd")) == fds
