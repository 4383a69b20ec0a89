"""Logs, attach and exec: the streaming endpoints, multiplexed and TTY, through docker-py."""

from __future__ import annotations

import socket
import time

import docker

from dockertest.harness import Daemon, wait_for

SCRIPT = "echo out1; echo err1 >&2; sleep 1; echo out2; echo err2 >&2"


def demux(data: bytes) -> dict[int, bytes]:
    """Split Docker's stream framing (type byte, 3 zero bytes, big-endian length) by stream."""
    frames: dict[int, bytes] = {1: b"", 2: b""}
    while len(data) >= 8:
        kind, size = data[0], int.from_bytes(data[4:8], "big")
        frames[kind] += data[8 : 8 + size]
        data = data[8 + size :]
    assert data == b"", f"a truncated frame: {data!r}"
    return frames


def test_logs_streams_tail_timestamps_since(dk: Daemon) -> None:
    """stdout/stderr selection, tail and timestamps, on Docker's multiplexed framing.

    dockerd does not keep the order between stdout and stderr, so only per-stream order is
    asserted.
    """
    c = dk.client.containers.run(dk.busybox, ["sh", "-c", SCRIPT], detach=True)
    c.wait(timeout=60)
    # dockerd's log copier may still be flushing right after wait
    wait_for(lambda: len(c.logs().split()) == 4, 10, "all four lines in the log")
    assert c.logs(stdout=True, stderr=False) == b"out1\nout2\n"
    assert c.logs(stdout=False, stderr=True) == b"err1\nerr2\n"
    assert sorted(c.logs().split()) == [b"err1", b"err2", b"out1", b"out2"]
    # tail counts lines of both streams before the selection (dockerd: tail=1 of stdout alone
    # is empty here, err2 being the last line); the last two are one of each
    assert sorted(c.logs(tail=2).split()) == [b"err2", b"out2"]
    stamped = c.logs(stderr=False, timestamps=True).decode().splitlines()
    assert [ln.split(" ", 1)[1] for ln in stamped] == ["out1", "out2"]
    assert stamped[0].split(" ")[0].startswith("20") and "T" in stamped[0]
    future = int(time.time()) + 3600
    assert c.logs(since=future) == b""
    # the raw frames: stream type 1 = stdout, 2 = stderr
    raw = dk.api._get(dk.api._url("/containers/{0}/logs", c.id),
                      params={"stdout": 1, "stderr": 1}, timeout=30)  # fmt: skip
    assert demux(raw.content) == {1: b"out1\nout2\n", 2: b"err1\nerr2\n"}


def test_logs_follow(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sh", "-c", "echo a; sleep 1; echo b"],
                                 detach=True)  # fmt: skip
    got = b"".join(c.logs(stream=True, follow=True))
    assert got == b"a\nb\n"


def test_logs_tty_is_raw(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["echo", "tty-out"], detach=True, tty=True)
    c.wait(timeout=60)
    assert wait_for(c.logs, 10, "the TTY's output in the log") == b"tty-out\r\n"


def _read_until(sock: socket.socket, want: bytes, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while want not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_attach_with_stdin(dk: Daemon) -> None:
    """A hijacked attach carries stdin in and the TTY's output back."""
    c = dk.api.create_container(dk.busybox, ["sh"], stdin_open=True, tty=True)
    sock = dk.api.attach_socket(c["Id"], params={"stdin": 1, "stdout": 1, "stream": 1})
    raw = sock._sock
    try:
        dk.api.start(c["Id"])
        raw.sendall(b"echo attached-$((6*7))\n")
        assert b"attached-42" in _read_until(raw, b"attached-42")
        raw.sendall(b"exit 3\n")
        assert dk.api.wait(c["Id"], timeout=60)["StatusCode"] == 3
    finally:
        raw.close()


def test_attach_multiplexed_without_tty(dk: Daemon) -> None:
    """docker run without -d: attach (stdin, stdout, stderr) + start + wait, framed streams."""
    c = dk.api.create_container(dk.busybox, ["sh", "-c", "read x; echo got-$x; echo e >&2"],
                                stdin_open=True)  # docker-py sets StdinOnce with it
    sock = dk.api.attach_socket(c["Id"], params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                 "stream": 1})  # fmt: skip
    raw = sock._sock
    try:
        dk.api.start(c["Id"])
        raw.sendall(b"hello\n")
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(30)
        data = b""
        while chunk := raw.recv(4096):
            data += chunk
    finally:
        raw.close()
    assert demux(data) == {1: b"got-hello\n", 2: b"e\n"}
    assert dk.api.wait(c["Id"], timeout=60)["StatusCode"] == 0


def test_exec_create_start_inspect(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    res = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 9"], demux=True)
    assert res.exit_code == 9 and res.output == (b"o\n", b"e\n")
    ex = dk.api.exec_create(c.id, ["sh", "-c", "echo $HOME $V; pwd; id -u"],
                            environment={"V": "x"}, workdir="/tmp", user="1000")  # fmt: skip
    assert dk.api.exec_start(ex["Id"]) == b"/home/berth x\n/tmp\n1000\n"
    info = dk.api.exec_inspect(ex["Id"])
    assert info["ExitCode"] == 0 and info["Running"] is False and info["ContainerID"] == c.id
    assert info["ProcessConfig"]["user"] == "1000"


def test_exec_ids_name_unfinished_execs_only(dk: Daemon) -> None:
    """ExecIDs lists created and running execs; a finished one stays inspectable by its id."""
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    done = dk.api.exec_create(c.id, ["true"])["Id"]
    waiting = dk.api.exec_create(c.id, ["true"])["Id"]
    assert set(dk.api.inspect_container(c.id)["ExecIDs"]) == {done, waiting}
    dk.api.exec_start(done)
    # dockerd ends the stream a moment before it drops the exec from the container
    wait_for(lambda: dk.api.inspect_container(c.id)["ExecIDs"] == [waiting], 30, "exec dropped")
    assert dk.api.exec_inspect(done)["ExitCode"] == 0


def test_exec_detach_and_running(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    ex = dk.api.exec_create(c.id, ["sh", "-c", "sleep 2; exit 6"])
    assert not dk.api.exec_start(ex["Id"], detach=True)
    info = dk.api.exec_inspect(ex["Id"])
    assert info["Running"] is True and info["Pid"] > 0  # the exec's pid on the host
    wait_for(lambda: not dk.api.exec_inspect(ex["Id"])["Running"], 30, "exec to finish")
    assert dk.api.exec_inspect(ex["Id"])["ExitCode"] == 6


def test_exec_tty_resize_and_stdin(dk: Daemon) -> None:
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    ex = dk.api.exec_create(c.id, ["sh"], stdin=True, tty=True)
    sock = dk.api.exec_start(ex["Id"], tty=True, socket=True)
    raw = sock._sock
    try:
        dk.api.exec_resize(ex["Id"], height=33, width=101)
        raw.sendall(b"stty size\n")
        assert b"33 101" in _read_until(raw, b"33 101")
        raw.sendall(b"exit 2\n")
        wait_for(lambda: not dk.api.exec_inspect(ex["Id"])["Running"], 30, "exec exit")
    finally:
        raw.close()
    assert dk.api.exec_inspect(ex["Id"])["ExitCode"] == 2


def test_exec_on_stopped_container_conflicts(dk: Daemon) -> None:
    c = dk.client.containers.create(dk.busybox, ["true"])
    try:
        dk.api.exec_create(c.id, ["true"])
        raise AssertionError("exec on a created container was accepted")
    except docker.errors.APIError as e:
        assert e.status_code == 409 and "is not running" in str(e.explanation)
    try:
        dk.api.exec_inspect("no-such-exec-dt")
        raise AssertionError("unknown exec id was accepted")
    except docker.errors.NotFound as e:
        assert "No such exec instance" in str(e.explanation)


def test_exec_outlives_a_client_that_hangs_up_and_keeps_its_exit_code(dk: Daemon) -> None:
    """The client of an attached exec goes away while the process still writes: inspect must
    not say ExitCode null once the exec is over (the docker CLI shows null as 0). Berth once
    abandoned the session at the first write that failed; the monitor then killed the process
    and nobody learnt its status.

    The daemons differ in the code: dockerd 20.10 gives up on an exec whose attach failed
    (Running false, ExitCode 126, its ContainerExecStart error path) while the process may
    still run; Berth drops the rest of the output and reports the process's own code."""
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    script = "for i in $(seq 40); do echo line$i; usleep 50000; done; exit 5"
    ex = dk.api.exec_create(c.id, ["sh", "-c", script])
    sock = dk.api.exec_start(ex["Id"], socket=True)
    raw = sock._sock
    assert b"line1" in _read_until(raw, b"line1")
    raw.close()
    sock.close()
    info = wait_for(lambda: (i := dk.api.exec_inspect(ex["Id"]))["ExitCode"] is not None and i,
                    30, "the exec's exit code")
    assert (info["Running"], info["ExitCode"]) == (False, 126 if dk.name == "dockerd" else 5)


def test_exec_that_cannot_start_ends_with_126(dk: Daemon) -> None:
    """A command that is missing or not executable: the exec has ended with ExitCode 126.
    Attached, the error comes on the stream (the CLI prints it and exits 126); detached, the
    start is a 400. Berth once answered 500 with ExitCode null (the CLI: "unable to upgrade
    to tcp, received 500", exit 1). dockerd's text carries its OCI runtime's prefix."""
    c = dk.client.containers.run(dk.busybox, ["sleep", "300"], detach=True)
    ex = dk.api.exec_create(c.id, ["nosuchcmd"])
    out = dk.api.exec_start(ex["Id"])
    assert b'"nosuchcmd": executable file not found in $PATH' in out
    assert (dk.api.exec_inspect(ex["Id"])["ExitCode"], dk.api.exec_inspect(ex["Id"])["Running"]) \
        == (126, False)
    ex = dk.api.exec_create(c.id, ["/tmp"])
    try:
        dk.api.exec_start(ex["Id"], detach=True)
        raise AssertionError("a detached start of a directory was accepted")
    except docker.errors.APIError as e:
        assert e.status_code == 400 and "permission denied" in str(e.explanation)
    assert dk.api.exec_inspect(ex["Id"])["ExitCode"] == 126
    res = dk.cli("exec", c.id, "nosuchcmd", check=False)
    assert res.returncode == 126 and "executable file not found" in res.stdout + res.stderr
