"""seccomp on the real kernel: filters are loaded in a child forked by a fresh helper process.

pytest may have threads, so it never forks: seccomp_child.py (a new single-threaded Python)
compiles the profile, forks, and the child sets no_new_privs, loads the filter and probes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
from typing import Any

import pytest

from runtime.caps import default_caps
from runtime.seccomp import compile_profile, default_profile, filter_flags
from runtime.seccomp.compiler import RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS

pytestmark = pytest.mark.timeout(60)
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_child.py")
ENOSYS_X32 = 0x40000000 + 39  # x32 getpid


def run(profile: Any, *probes: list[Any]) -> dict[str, Any]:
    spec = json.dumps({"profile": profile, "probes": [list(p) for p in probes]})
    out = subprocess.run([sys.executable, HELPER, spec], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_default_profile_allows_common_and_blocks_dangerous(tmp_path: Any) -> None:
    d = str(tmp_path / "d")
    res = run(
        "default",
        ["status"],
        ["mkdir", d],
        ["exec"],
        ["socket", 2, 1, 0],  # AF_INET stream: allowed (the fd is left to exit)
        ["socket", 40, 1, 0],  # AF_VSOCK: refused by the conditional rule
        ["unshare", 0x40000000],  # CLONE_NEWNET without CAP_SYS_ADMIN in the profile
        ["mount", 0, 0, 0, 0, 0],
        ["clone3", 0, 0],  # ENOSYS so libc falls back to clone
        ["clone", 0x04000000 | 0x00010000, 0, 0, 0, 0],  # NEWUTS|THREAD: masked-eq refuses
        ["personality", 0xFFFFFFFF],  # query: allowed
        ["personality", 0x0040000],  # ADDR_NO_RANDOMIZE: refused
        ["keyctl", 0, 0, 0, 0, 0],
        ["fchmodat2", 2**64 - 100, 0, 0, 0],  # newer than Debian's headers: allowed, EFAULT
        ["raw", 1000],  # newer than any syscall we know: ENOSYS, so libc can fall back
    )
    assert res["signal"] == 0
    (status, mkdir, exe, inet, vsock, unshare, mount, clone3, clone, query, persona, keyctl,
     fchmodat2, future) = res["results"]
    assert status == ["2"]
    assert mkdir == [0, 0] and exe == [0, 0]
    assert inet[0] >= 0
    assert vsock == [-1, errno.EPERM]
    assert unshare == [-1, errno.EPERM] and mount == [-1, errno.EPERM]
    assert clone3 == [-1, errno.ENOSYS]
    assert clone == [-1, errno.EPERM]
    assert query[0] >= 0 and persona == [-1, errno.EPERM]
    assert keyctl == [-1, errno.EPERM]
    assert fchmodat2 == [-1, errno.EFAULT] and future == [-1, errno.ENOSYS]


def test_custom_profile_errno_for_mkdir(tmp_path: Any) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["rmdir", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ],
    }
    res = run(profile, ["status"], ["mkdir", str(tmp_path / "x")], ["rmdir", 0], ["getpid"])
    status, mkdir, rmdir, getpid = res["results"]
    assert status == ["2"] and mkdir == [-1, errno.EPERM] and rmdir == [-1, errno.EACCES]
    assert getpid[0] > 0
    assert not (tmp_path / "x").exists()


OPS = {
    "SCMP_CMP_EQ": lambda a, v, _: a == v,
    "SCMP_CMP_NE": lambda a, v, _: a != v,
    "SCMP_CMP_LT": lambda a, v, _: a < v,
    "SCMP_CMP_LE": lambda a, v, _: a <= v,
    "SCMP_CMP_GT": lambda a, v, _: a > v,
    "SCMP_CMP_GE": lambda a, v, _: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, two: a & v == two,
}
# Harmless syscalls taking a pid-like first arg: their own errors are never 70+.
SYSCALLS = ["getpgid", "getsid", "sched_getscheduler", "sched_getparam", "sched_rr_get_interval",
            "getpriority", "ioprio_get"]
VALUE = (5 << 32) | 7
TWO = (5 << 32) | 2
ARGS = [0, 6, 7, 8, 1 << 32, (4 << 32) | 9, VALUE - 1, VALUE, VALUE + 1, (6 << 32), 2**64 - 1]


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="64-bit arch only")
def test_64bit_argument_comparisons_match_python_semantics() -> None:
    rules = []
    for i, (op, name) in enumerate(zip(OPS, SYSCALLS, strict=True)):
        value = 0xFFFFFFFF0000000F if op == "SCMP_CMP_MASKED_EQ" else VALUE
        arg = {"index": 0, "op": op, "value": value, "valueTwo": TWO}
        rules.append({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 70 + i,
                      "args": [arg]})
    rules.append({"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 90,
                  "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1 << 40},
                           {"index": 1, "op": "SCMP_CMP_EQ", "value": 0}]})
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    probes = [[name, a, 0] for name in SYSCALLS for a in ARGS]
    probes += [["kill", 1 << 40, 0], ["kill", 1 << 40, 1 << 33]]
    res = run(profile, *probes)["results"]
    matched = 0
    for i, op in enumerate(OPS):
        value = 0xFFFFFFFF0000000F if op == "SCMP_CMP_MASKED_EQ" else VALUE
        for j, a in enumerate(ARGS):
            got = res[i * len(ARGS) + j]
            expected = OPS[op](a, value, TWO)
            matched += expected
            assert (got == [-1, 70 + i]) == expected, (op, hex(a), got)
    assert 0 < matched < len(OPS) * len(ARGS)
    assert res[-2] == [-1, 90]  # both args match: AND
    assert res[-1] != [-1, 90]  # second arg differs in its high word only


def test_x32_syscalls_kill_unless_the_profile_lists_x32() -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("x32 exists only on x86_64")
    allow = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
    res = run(allow, ["getpid"], ["raw", ENOSYS_X32])
    assert res["signal"] == signal.SIGSYS and res["results"] is None
    with_x32 = {**allow, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]}
    res = run(with_x32, ["raw", ENOSYS_X32])
    assert res["signal"] == 0  # this kernel has no x32 ABI: ENOSYS, but the filter let it pass


def test_kill_process_action() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    assert run(profile, ["getppid"])["signal"] == signal.SIGSYS


def test_compiled_program_shape() -> None:
    bpf = compile_profile(default_profile(), arch="x86_64")
    insns = [struct.unpack("=HBBI", bpf[i:i + 8]) for i in range(0, len(bpf), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch first
    rets = {k for code, _, _, k in insns if code == 0x06}
    assert {RET_ALLOW, RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS,
            RET_KILL_PROCESS} <= rets
    arm = compile_profile(default_profile(arch="aarch64"), arch="aarch64")
    assert 0 < len(arm) < len(bpf)  # one section instead of x86_64 + x86 + x32


def test_default_profile_follows_capabilities() -> None:
    plain = default_profile(default_caps(), arch="x86_64")
    names = {n for s in plain["syscalls"] for n in s["names"]}
    assert "chroot" in names and "ptrace" in names and "mount" not in names
    assert "arch_prctl" in names and "set_tls" not in names
    admin = default_profile([*default_caps(), "CAP_SYS_ADMIN"], arch="x86_64")
    clone_rules = [s for s in admin["syscalls"] if "clone" in s["names"]]
    assert clone_rules and all(not s.get("args") for s in clone_rules)
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


# One syscall per capability that Docker's profile gates on it (moby profiles/seccomp).
GATED = {
    "CAP_SYS_ADMIN": ["sethostname", "setns", "unshare", "mount", "umount2", "fsopen", "syslog",
                      "bpf", "perf_event_open", "quotactl"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_TIME": ["settimeofday", "clock_settime"],
    "CAP_SYS_NICE": ["mbind", "set_mempolicy", "get_mempolicy"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}


@pytest.mark.parametrize("cap", sorted(GATED))
def test_capability_opens_its_syscalls(cap: str) -> None:
    """Each capability Docker's profile names opens its syscalls, and only with it."""
    def allowed(caps: list[str]) -> set[str]:
        prof = default_profile(caps, arch="x86_64")
        return {n for s in prof["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" and not s.get("args")
                for n in s["names"]}

    assert not set(GATED[cap]) & allowed(default_caps())
    assert set(GATED[cap]) <= allowed([*default_caps(), cap])


def test_sethostname_with_sys_admin_under_runtime_default() -> None:
    """The filter lets sethostname through once CAP_SYS_ADMIN is in the set.

    A bad name pointer (1) makes an allowed call fail with EFAULT, so the host keeps its name.
    """
    plain = run(default_profile(default_caps()), ["sethostname", 1, 5])
    admin = run(default_profile([*default_caps(), "CAP_SYS_ADMIN"]), ["sethostname", 1, 5])
    assert plain["results"] == [[-1, errno.EPERM]]
    assert admin["results"] == [[-1, errno.EFAULT]]


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "unsupported action"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "listenerPath"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "op":
                                                                       "SCMP_CMP_EQ"}]}]},
         "index"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op":
                                                                       "SCMP_CMP_FOO"}]}]},
         "op"),
    ],
)
def test_rejects_what_it_cannot_honour(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_profile(profile, arch="x86_64")


def test_flags() -> None:
    assert filter_flags({"flags": ["SECCOMP_FILTER_FLAG_LOG"]}) == 2
    with pytest.raises(ValueError):
        filter_flags({"flags": ["SECCOMP_FILTER_FLAG_BOGUS"]})
