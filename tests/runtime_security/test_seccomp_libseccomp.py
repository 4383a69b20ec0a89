"""Cross-checks the BPF compiler against libseccomp, an independent implementation.

No filter is loaded here: both programs run in a small cBPF interpreter over the same
seccomp_data inputs, and our generated syscall tables are compared with libseccomp's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import tempfile
from typing import Any

import pytest

from runtime.seccomp import compile_profile, default_profile
from runtime.seccomp._syscalls import TABLES
from runtime.seccomp.compiler import RET_KILL_PROCESS, RET_KILL_THREAD, action_value

pytestmark = pytest.mark.timeout(60)
_path = ctypes.util.find_library("seccomp")
lib = ctypes.CDLL(_path) if _path else None
TOKENS = {"x86_64": 0xC000003E, "x86": 0x40000003, "x32": 0x4000003E, "aarch64": 0xC00000B7}
AUDIT_I386 = 0x40000003
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
needs_lib = pytest.mark.skipif(lib is None, reason="libseccomp is not installed")


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def run_bpf(prog: bytes, nr: int, arch: int, args: list[int]) -> int:
    """Just enough classic BPF for seccomp programs (what we and libseccomp emit)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(args + [0] * (6 - len(args))))
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    a, x, mem, pc = 0, 0, [0] * 16, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:
            return k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            test = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if test else jf
        elif code == 0x54:
            a &= k
        elif code == 0x02:
            mem[k] = a
        elif code == 0x60:
            a = mem[k]
        elif code == 0x00:
            a = k
        elif code == 0x07:
            x = a
        elif code == 0x87:
            a = x
        else:
            raise AssertionError(f"unhandled BPF opcode {code:#x}")


def libseccomp_bpf(profile: dict[str, Any], arches: list[str]) -> bytes:
    assert lib is not None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    default = action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    try:
        for arch in arches[1:]:
            assert lib.seccomp_arch_add(ctx, TOKENS[arch]) == 0
        for rule in profile["syscalls"]:
            action = action_value(rule["action"], rule.get("errnoRet"))
            if action == default:
                continue
            cmps = (_ArgCmp * 6)(*[_ArgCmp(a["index"], OPS[a["op"]], a.get("value", 0),
                                           a.get("valueTwo", 0)) for a in rule.get("args", [])])
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR; other negatives are per-arch pseudo numbers
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(rule.get("args", [])), cmps)
                assert rc == 0, (name, rc)
        with tempfile.TemporaryFile() as f:
            assert lib.seccomp_export_bpf(ctx, f.fileno()) == 0
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


@needs_lib
@pytest.mark.parametrize("arch", ["x86_64", "x86", "x32", "aarch64"])
def test_generated_tables_agree_with_libseccomp(arch: str) -> None:
    assert lib is not None
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    known = 0
    for name, nr in TABLES[arch].items():
        theirs = lib.seccomp_syscall_resolve_name_arch(TOKENS[arch], name.encode())
        if theirs >= 0:  # libseccomp may predate the newest syscalls
            known += 1
            assert theirs == nr, (arch, name, nr, theirs)
    assert known > 0.9 * len(TABLES[arch])


ARGS = {
    "personality": [[0], [8], [0x20000], [0x20008], [0xFFFFFFFF], [0x40000], [(1 << 32) | 8]],
    "socket": [[2, 1], [40, 1], [(1 << 32) | 40, 1], [16, 3]],
    "clone": [[0x11], [0x20011], [0x7E020000], [1 << 33], [0x01200011]],
}


@needs_lib
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="libseccomp here targets x86_64")
def test_default_profile_decisions_match_libseccomp() -> None:
    assert lib is not None
    profile = default_profile(arch="x86_64")
    ours = compile_profile(profile, arch="x86_64")
    theirs = libseccomp_bpf(profile, ["x86_64", "x86", "x32"])
    cases: list[tuple[int, int, list[int]]] = []
    nrs = set(TABLES["x86_64"].values()) | set(range(0, 480)) | set(TABLES["x32"].values())
    cases += [(nr, TOKENS["x86_64"], [0, 0]) for nr in sorted(nrs)]
    cases += [(nr, AUDIT_I386, [0, 0]) for nr in range(0, 480)]
    for name, arglists in ARGS.items():
        for args in arglists:
            cases.append((TABLES["x86_64"][name], TOKENS["x86_64"], args))
            if name in TABLES["x86"]:
                low = [a & 0xFFFFFFFF for a in args]
                cases.append((TABLES["x86"][name], AUDIT_I386, low))
    kills = {RET_KILL_PROCESS, RET_KILL_THREAD}
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_char_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    for nr, arch, args in cases:
        abi = "x86" if arch == AUDIT_I386 else "x32" if nr & 0x40000000 else "x86_64"
        if nr > max(TABLES[abi].values()):
            continue  # ours answers ENOSYS past the newest syscall (runc does the same)
        if lib.seccomp_syscall_resolve_num_arch(TOKENS[abi], nr) is None \
                and nr in TABLES[abi].values():
            continue  # newer than this libseccomp: it cannot have a rule for it
        a, b = run_bpf(ours, nr, arch, args), run_bpf(theirs, nr, arch, args)
        if a in kills and b in kills:
            continue  # both kill; libseccomp's bad-arch default kills the thread only
        assert a == b, (hex(arch), nr, [hex(v) for v in args], hex(a), hex(b))
