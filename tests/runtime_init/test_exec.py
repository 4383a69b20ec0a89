"""Execs into a running container through the C helper (runtime/joinexec.c): the process's
view from inside, and each failure reported as one line before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import caps, joinexec, seccomp
from runtime.spec import default_spec

pytestmark = pytest.mark.timeout(60)


def _running(rootfs: Path) -> dict:
    spec = default_spec(str(rootfs), ["sleep", "30"])
    spec["linux"]["seccomp"] = seccomp.default_profile()
    return spec


def _exec(run_container, rootfs: Path, *procs: dict, **req) -> list:
    spec = _running(rootfs)
    execs = [dict(spec["process"], **p) for p in procs]
    r = run_container({"spec": spec, "rootfs": str(rootfs), "exec": execs, "kill": True, **req})
    return [r.data["exec"], r.stdout]


def test_failures_are_reported_as_one_line(busybox_rootfs, run_container):
    exits, _ = _exec(run_container, busybox_rootfs,
                     {"args": ["true"], "cwd": "/no/such/dir"},
                     {"args": ["nope"]},
                     {"args": ["/bin/nope"]},
                     {"args": ["true"], "user": {"uid": 4294967295, "gid": 0}},
                     {"args": ["true"], "capabilities": {"bounding": ["CAP_NOPE"]}},
                     {"args": ["true"], "rlimits": [{"type": "RLIMIT_NOPE", "soft": 1,
                                                     "hard": 1}]},
                     {"args": ["true"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 9,
                                                     "hard": 8}]},
                     {"args": ["true"]})
    assert exits == [
        "chdir /no/such/dir: No such file or directory",
        'exec: "nope": executable file not found in $PATH',
        "exec: /bin/nope: no such file or directory",
        "set user 4294967295:0: Invalid argument",
        "ValueError: unknown capability 'CAP_NOPE'",
        "unknown rlimit RLIMIT_NOPE",
        "setrlimit RLIMIT_NOFILE: Invalid argument",
        0,  # the container is unharmed by the failures before it
    ]


def test_no_host_fd_and_no_host_cwd(busybox_rootfs, run_container):
    """CVE-2024-21626 for execs: the driver holds an inheritable host dir fd."""
    exits, out = _exec(run_container, busybox_rootfs,
                       {"args": ["sh", "-c", "ls /proc/$$/fd; readlink /proc/$$/cwd"],
                        "cwd": "/tmp"},
                       *({"args": ["true"], "cwd": f"/proc/self/fd/{n}"} for n in range(3, 12)),
                       leak_fd=True)
    assert out.split() == ["0", "1", "2", "/tmp"]
    assert exits[0] == 0
    for n, e in zip(range(3, 12), exits[1:], strict=True):
        assert isinstance(e, str) and e.startswith(f"chdir /proc/self/fd/{n}: "), e


def test_user_env_home_limits_and_caps(busybox_rootfs, run_container):
    script = "echo $HOME $A; umask; ulimit -n; id -u; id -G; " \
             "grep -E '^Cap(Bnd|Eff|Amb):' /proc/self/status"
    keep = ["CAP_KILL", "CAP_CHOWN"]
    exits, out = _exec(run_container, busybox_rootfs, {
        "args": ["sh", "-c", script], "env": ["A=1", "PATH=/bin", "A=2"],
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 29], "umask": 0o027},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 99}],
        "capabilities": {"bounding": keep, "effective": keep, "permitted": keep,
                         "inheritable": keep, "ambient": ["CAP_KILL"]},
    }, {"args": ["sh", "-c", "echo $HOME"], "env": ["HOME=/given"]})
    assert exits == [0, 0]
    lines = out.splitlines()
    assert lines[:5] == ["/home/alice 2", "0027", "77", "1000", "1000 10 29"]
    status = dict(line.split(":\t") for line in lines[5:8])
    assert int(status["CapBnd"], 16) == caps.mask(keep)
    assert int(status["CapEff"], 16) == caps.mask(["CAP_KILL"])  # ambient: effective after exec
    assert int(status["CapAmb"], 16) == caps.mask(["CAP_KILL"])
    assert lines[8] == "/given"


def test_stamp_covers_every_source(tmp_path):
    """The helper is built from several files: a change to any one of them (the header too)
    makes the installed build stale, as a change to the one file did."""
    copies = []
    for src in joinexec.SOURCES:
        copies.append(tmp_path / src.name)
        copies[-1].write_bytes(src.read_bytes())
    assert {c.suffix for c in copies} == {".c", ".h"}
    assert joinexec.stamp(tuple(copies)) == joinexec.stamp()
    for copy in copies:
        kept = copy.read_bytes()
        copy.write_bytes(kept + b"\n")
        assert joinexec.stamp(tuple(copies)) != joinexec.stamp(), copy.name
        copy.write_bytes(kept)


def test_installed_helper_is_this_source(tmp_path):
    """A stale build (another checkout's) is told apart from ours by its stamp."""
    assert joinexec.installed()
    other = tmp_path / "joinexec"
    other.write_bytes(b"berth-joinexec:0000000000000000")
    assert not joinexec.installed(str(other))
