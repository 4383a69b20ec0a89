"""ExecSync output, cap, timeout; streaming exec; zombie reaping."""

from __future__ import annotations

import asyncio
import select
import time
from pathlib import Path

import pytest

from tests.fixtures._proc import wait_until
from tests.runtime_monitor.conftest import pid_alive, proc, spec

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def running(mon, rootfs):
    mon.client.create("c1", spec("sleep", "300"), str(rootfs))
    mon.client.start("c1")
    return mon.client


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is pid."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                data = (entry / "stat").read_bytes()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            if int(fields[1]) == pid:
                out.append((int(entry.name), fields[0].decode()))
    return out


def test_exec_sync_output_and_exit_code(running):
    r = running.exec_sync("c1", proc("sh", "-c", "echo out; echo err >&2; exit 4"), 10)
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (4, b"out\n", b"err\n", False)


def test_exec_sync_output_is_capped(mon, running):
    """CVE-2022-31030: 40 MiB of output gives 16 MiB back and a bounded monitor."""
    before = vm_hwm_kib(mon.pid)
    r = running.exec_sync("c1", proc("head", "-c", "41943040", "/dev/zero"), 30)
    assert r.exit_code == 0 and len(r.stdout) == 16 << 20 and not r.timed_out
    growth_mib = (vm_hwm_kib(mon.pid) - before) / 1024
    assert growth_mib < 100, f"monitor peak grew {growth_mib:.0f} MiB"
    small = running.exec_sync("c1", proc("head", "-c", "5000", "/dev/zero"), 10, max_output=100)
    assert len(small.stdout) == 100


def test_exec_sync_timeout_with_background_child_holding_stdout(mon, running):
    t0 = time.monotonic()
    r = running.exec_sync("c1", proc("sh", "-c", "sleep 60 & echo started; sleep 60"), 1)
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.stdout == b"started\n"
    assert elapsed < 2.0, elapsed
    init = running.state("c1").pid
    wait_until(lambda: not [p for p, s in children(mon.pid) if s != "Z" and p != init], 10,
               "the timed-out exec's processes to be gone")


def test_exec_sync_returns_when_process_exits_but_pipe_stays_open(running):
    t0 = time.monotonic()
    r = running.exec_sync("c1", proc("sh", "-c", "sleep 3 & echo hi"), 0)
    assert r.exit_code == 0 and r.stdout == b"hi\n" and not r.timed_out
    assert time.monotonic() - t0 < 2.5


def test_orphans_of_execs_are_reaped(mon, rootfs):
    """In the host pid namespace (hostPID) an exec's orphan reparents to the subreaper monitor,
    which reaps it. (In a container's own pid namespace orphans go to its pid 1 instead.)"""
    c = mon.client
    s = spec("sleep", "300")
    s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "pid"]
    c.create("c1", s, str(rootfs))
    c.start("c1")
    r = c.exec_sync("c1", proc("sh", "-c", "sleep 0.5 >/dev/null 2>&1 & echo $!"), 10)
    orphan = int(r.stdout)
    stat = Path(f"/proc/{orphan}/stat").read_bytes()
    assert int(stat[stat.rindex(b")") + 2 :].split()[1]) == mon.pid  # reparented to us
    deadline = time.monotonic() + 5
    while Path(f"/proc/{orphan}").exists():  # a zombie would keep its /proc entry
        assert time.monotonic() < deadline, "orphan not reaped"
        time.sleep(0.05)
    assert [s for _, s in children(mon.pid) if s == "Z"] == []


def test_exec_in_stopped_container_is_refused(mon, rootfs):
    c = mon.client
    c.create("c1", spec("true"), str(rootfs))
    c.start("c1")
    c.wait("c1", timeout=10)
    with pytest.raises(Exception, match="not running"):
        c.exec_sync("c1", proc("true"), 5)


def test_exec_stream_stdin_and_exit(running):
    async def session():
        s = await running.aio.exec_stream("c1", proc("sh", "-c", "cat; echo e >&2; exit 7"),
                                          stdin=True)
        await s.send_stdin(b"hello\n")
        await s.close_stdin()
        got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        while (frame := await s.recv()) is not None:
            got[frame[0]] += frame[1]
        s.close()
        return s.exit_code, got

    code, got = running._run(session())
    assert code == 7 and got == {"stdout": b"hello\n", "stderr": b"e\n"}


def test_exec_stream_stdin_eof_after_the_exit_loses_nothing(running):
    """`docker exec -i` with stdin at EOF: the client's CLOSE_STDIN can come after the exec
    has exited and the monitor has sent its output and EXIT. The monitor must still take it;
    if it had closed instead, the write fails (EPIPE) and the client's stream reader raises
    before handing out the frames it already holds: no output, no exit code."""
    async def session():
        s = await running.aio.exec_stream("c1", proc("sh", "-c", "echo hello; exit 3"),
                                          stdin=True)
        # Block this loop (so nothing is read) until the monitor has shut its sending side,
        # which it does only after EXIT: the ordering that lost the output, every time.
        sock = s.writer.get_extra_info("socket")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        assert poller.poll(30_000), "the monitor never finished sending"
        await s.send_stdin(b"late\n")
        await s.close_stdin()
        frames = []
        while (frame := await s.recv()) is not None:
            frames.append(frame)
        s.close()
        return s.exit_code, frames

    assert running._run(session()) == (3, [("stdout", b"hello\n")])


def test_exec_stream_tty_and_resize(running):
    async def session():
        p = proc("sh", "-c", "sleep 0.3; stty size")
        p["terminal"] = True
        s = await running.aio.exec_stream("c1", p, tty=True)
        await s.resize(77, 22)
        out = b""
        while (frame := await s.recv()) is not None:
            out += frame[1]
        s.close()
        return s.exit_code, out

    code, out = running._run(session())
    assert code == 0 and out.strip() == b"22 77"


def test_exec_stream_client_gone_kills_the_exec(mon, running):
    """A streaming exec must not outlive its session."""
    async def start():
        s = await running.aio.exec_stream("c1", proc("sh", "-c", "echo up; sleep 100"))
        frame = await s.recv()
        assert frame == ("stdout", b"up\n")
        return s, int(s.info["pid"])

    def monitor_fds() -> int:
        return len(list(Path(f"/proc/{mon.pid}/fd").iterdir()))

    before = monitor_fds()
    s, pid = running._run(start())
    assert pid_alive(pid)

    async def hang_up():
        s.close()

    running._run(hang_up())  # the session belongs to the client's loop thread
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline, "exec survived its client"
        time.sleep(0.05)
    r = running.exec_sync("c1", proc("true"), 5)
    assert r.exit_code == 0
    while monitor_fds() > before:  # the session's pipes close once its pumps see the end
        assert time.monotonic() < deadline + 5, f"monitor holds {monitor_fds() - before} more fds"
        time.sleep(0.05)


def test_exec_exit_after_a_broken_session(running):
    """A session that ends before EXIT still yields the exit code: the monitor keeps it under
    the client's exec id. A process still running then is killed (137); one that had ended
    keeps its own code; an id the monitor never saw is unknown (None)."""
    async def broken(script: str, settle: float) -> tuple[int | None, int | None]:
        s = await running.aio.exec_stream("c1", proc("sh", "-c", script))
        assert await s.recv() == ("stdout", b"up\n")
        await asyncio.sleep(settle)
        s.close()  # before EXIT was read: the session is over, the exit frame lost
        return s.exit_code, await running.aio.exec_exit(s, wait=5)

    assert running._run(broken("echo up; sleep 100", 0)) == (None, 137)
    assert running._run(broken("echo up; exit 6", 0.5)) == (None, 6)

    async def stranger():
        s = await running.aio.exec_stream("c1", proc("true"))
        s.close()
        s.exec_id = "never-started-here"
        return await running.aio.exec_exit(s, wait=1)

    assert running._run(stranger()) is None


def test_concurrent_exec_syncs(running):
    """Many probes at once must neither deadlock nor mix up their outputs."""
    async def many():
        return await asyncio.gather(*(
            running.aio.exec_sync("c1", proc("sh", "-c", f"usleep {k * 7000}; echo {k}"), 10)
            for k in range(12)))

    results = running._run(many())
    assert [r.stdout for r in results] == [f"{k}\n".encode() for k in range(12)]
    assert all(r.exit_code == 0 for r in results)
