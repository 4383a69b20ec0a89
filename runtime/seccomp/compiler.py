"""Compiles an OCI `linux.seccomp` object to classic BPF without libseccomp.

Semantics follow runc/libseccomp where the spec is silent:
- unknown syscall names are skipped; the native arch is always filtered even if not listed;
- a syscall's conditional rules are tried in profile order before its unconditional one;
- several args on the same index make one rule per arg (OR), otherwise args are ANDed;
- 32-bit arches (x86, x32) compare only the low 32 bits of each argument (values truncated);
- a syscall from an arch the profile does not cover kills the process (x32 on x86_64 included);
  arm32 on aarch64 has no table here, so it is always killed.
Dispatch is a binary search over runs of syscall numbers with one outcome (see `_section`);
the kernel's seccomp action cache (5.11+) then skips the filter for syscalls allowed
regardless of arguments, which is most of them.
"""

from __future__ import annotations

import errno
import platform
from dataclasses import dataclass

from runtime.seccomp._bpf import (
    JMP_JEQ_K,
    JMP_JGE_K,
    JMP_JGT_K,
    OFF_ARCH,
    OFF_ARGS,
    OFF_NR,
    Label,
    Program,
)
from runtime.seccomp._syscalls import TABLES

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
X32_SYSCALL_BIT = 0x40000000

AUDIT_ARCH = {"x86_64": 0xC000003E, "x86": 0x40000003, "aarch64": 0xC00000B7}
OCI_ARCH = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32",
            "SCMP_ARCH_AARCH64": "aarch64"}
# Arches a native filter may also cover: a 64-bit kernel runs these ABIs too.
COMPAT = {"x86_64": ("x86_64", "x32", "x86"), "aarch64": ("aarch64",)}
WIDE = {"x86_64", "aarch64"}
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
BPF_MAXINSNS = 4096
_OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ"}


@dataclass(frozen=True)
class _Arg:
    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True)
class _Rule:
    ret: int
    args: tuple[_Arg, ...]


def native_arch() -> str:
    """Maps uname's machine to our table key; only what we have tables for is accepted."""
    m = platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
    if arch not in COMPAT:
        raise ValueError(f"seccomp: unsupported native arch {m!r}")
    return arch


def action_value(action: str, errno_ret: int | None) -> int:
    """Maps an OCI action name to SECCOMP_RET_*; NOTIFY needs a listener we do not run."""
    data = errno.EPERM if errno_ret is None else errno_ret
    if not 0 <= data <= 0xFFFF:
        raise ValueError(f"seccomp: errnoRet {data} out of range")
    simple = {
        "SCMP_ACT_KILL": RET_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
        "SCMP_ACT_TRAP": RET_TRAP,
        "SCMP_ACT_ALLOW": RET_ALLOW,
        "SCMP_ACT_LOG": RET_LOG,
    }
    if action in simple:
        return simple[action]
    if action == "SCMP_ACT_ERRNO":
        return RET_ERRNO | data
    if action == "SCMP_ACT_TRACE":
        return RET_TRACE | data
    raise ValueError(f"seccomp: unsupported action {action!r}")


def filter_flags(profile: dict) -> int:
    """Returns the seccomp(2) flags named in the profile's `flags` list."""
    out = 0
    for name in profile.get("flags") or []:
        if name not in FLAGS:
            raise ValueError(f"seccomp: unsupported flag {name!r}")
        out |= FLAGS[name]
    return out


def _parse_args(raw: list[dict]) -> list[tuple[_Arg, ...]]:
    args = []
    for a in raw:
        index = int(a["index"])
        if not 0 <= index <= 5:
            raise ValueError(f"seccomp: arg index {index} out of range")
        op = a.get("op", "")
        if op not in _OPS:
            raise ValueError(f"seccomp: unsupported arg op {op!r}")
        args.append(_Arg(index, int(a.get("value", 0)), int(a.get("valueTwo", 0)), op))
    if len({a.index for a in args}) < len(args):
        return [(a,) for a in args]
    return [tuple(args)] if args else [()]


def _rules(profile: dict, table: dict[str, int], default: int) -> dict[int, list[_Rule]]:
    """Groups the profile's rules by syscall number, conditional rules first."""
    cond: dict[int, list[_Rule]] = {}
    plain: dict[int, _Rule] = {}
    for entry in profile.get("syscalls") or []:
        ret = action_value(entry["action"], entry.get("errnoRet"))
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        for argset in _parse_args(entry.get("args") or []):
            for name in names:
                nr = table.get(name)
                if nr is None:
                    continue
                if argset:
                    cond.setdefault(nr, []).append(_Rule(ret, argset))
                elif ret != default:
                    plain.setdefault(nr, _Rule(ret, ()))
    out: dict[int, list[_Rule]] = {}
    for nr in sorted(set(cond) | set(plain)):
        out[nr] = cond.get(nr, []) + ([plain[nr]] if nr in plain else [])
    return out


def _cmp(p: Program, arg: _Arg, wide: bool, fail: Label) -> None:
    """Emits one 64-bit (or low-32-bit) comparison; falls through on match, jumps to fail."""
    lo_off = OFF_ARGS + 8 * arg.index
    hi_off = lo_off + 4
    val, two = arg.value, arg.value_two
    vlo, vhi = val & 0xFFFFFFFF, (val >> 32) & 0xFFFFFFFF
    ok = p.label()
    if arg.op == "SCMP_CMP_MASKED_EQ":
        for off, mask, want in ((hi_off, vhi, two >> 32), (lo_off, vlo, two)):
            if off == hi_off and not wide:
                continue
            p.load(off)
            p.and_(mask)
            p.jump(JMP_JEQ_K, want & 0xFFFFFFFF, 0, fail)
        p.place(ok)
        return
    # (lo jump code, jt on lo test, jf on lo test, hi gt target, hi lt target)
    lo_code, lo_t, lo_f, hi_gt, hi_lt = {
        "SCMP_CMP_EQ": (JMP_JEQ_K, ok, fail, fail, fail),
        "SCMP_CMP_NE": (JMP_JEQ_K, fail, ok, ok, ok),
        "SCMP_CMP_GT": (JMP_JGT_K, ok, fail, ok, fail),
        "SCMP_CMP_GE": (JMP_JGE_K, ok, fail, ok, fail),
        "SCMP_CMP_LT": (JMP_JGE_K, fail, ok, fail, ok),
        "SCMP_CMP_LE": (JMP_JGT_K, fail, ok, fail, ok),
    }[arg.op]
    if wide:
        p.load(hi_off)
        p.jump(JMP_JGT_K, vhi, hi_gt, 0)
        p.jump(JMP_JEQ_K, vhi, 0, hi_lt)
    p.load(lo_off)
    p.jump(lo_code, vlo, lo_t, lo_f)
    p.place(ok)


def _section(p: Program, rules: dict[int, list[_Rule]], default: int, wide: bool,
             numbers: range) -> None:
    """Emits the per-syscall dispatch: a binary search over runs of syscall numbers that share
    one outcome, so every syscall costs a handful of compares and the program stays small.

    The kernel runs the filter once per syscall number when it is loaded (to build its action
    cache) and JIT-compiles it: with one compare per syscall, ~2,000 instructions, that cost
    ~1.3 ms for every container process and every exec; the search is a few hundred.
    As runc does, a syscall newer than any we know gets ENOSYS rather than a refusing default,
    so libc falls back to an older call instead of failing outright. `numbers` spans the
    arch's table; the caller has already sent smaller numbers elsewhere (x32's bit).
    """
    beyond = default if default in (RET_ALLOW, RET_LOG) else RET_ERRNO | errno.ENOSYS
    runs: list[tuple[int, int | list[_Rule]]] = []  # (first nr, return value or rules)
    for nr in numbers:
        nr_rules = rules.get(nr)
        outcome: int | list[_Rule] = default
        if nr_rules is not None:
            outcome = nr_rules[0].ret if not nr_rules[0].args else nr_rules
        if not runs or isinstance(outcome, list) or outcome != runs[-1][1]:
            runs.append((nr, outcome))
    runs.append((numbers.stop, beyond))
    _search(p, runs, default, wide)


def _search(p: Program, runs: list[tuple[int, int | list[_Rule]]], default: int,
            wide: bool) -> None:
    """A holds the syscall number, known to be at least runs[0]'s first: return its outcome."""
    if len(runs) > 1:
        mid = len(runs) // 2
        upper = p.label()
        p.jump(JMP_JGE_K, runs[mid][0], 0, 1)  # jt/jf reach 255 instructions only: JA
        p.goto(upper)
        _search(p, runs[:mid], default, wide)
        p.place(upper)
        _search(p, runs[mid:], default, wide)
        return
    outcome = runs[0][1]
    if not isinstance(outcome, list):
        p.ret(outcome)
        return
    for rule in outcome:  # a syscall with argument rules: tried in order, default last
        nxt = p.label()
        for arg in rule.args:
            _cmp(p, arg, wide, nxt)
        p.ret(rule.ret)
        p.place(nxt)
    if outcome[-1].args:
        p.ret(default)


def compile_profile(profile: dict, arch: str | None = None) -> bytes:
    """Returns struct sock_filter[] for `profile` as seen by a process of native arch `arch`."""
    native = arch or native_arch()
    if native not in COMPAT:
        raise ValueError(f"seccomp: unsupported arch {native!r}")
    if profile.get("listenerPath"):
        raise ValueError("seccomp: listenerPath (SCMP_ACT_NOTIFY) is not supported")
    default = action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    wanted = {native}
    for name in profile.get("architectures") or []:
        if OCI_ARCH.get(name) in COMPAT[native]:
            wanted.add(OCI_ARCH[name])
    p = Program()
    entries: dict[str, Label] = {}
    p.load(OFF_ARCH)
    for sub in COMPAT[native]:
        audit = AUDIT_ARCH.get(sub)
        if sub in wanted and audit is not None:
            entries[sub] = p.label()
            p.jump(JMP_JEQ_K, audit, 0, 1)
            p.goto(entries[sub])
    p.ret(RET_KILL_PROCESS)
    for sub, entry in entries.items():
        p.place(entry)
        p.load(OFF_NR)
        if sub == "x86_64":
            x32 = p.label()
            p.jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1)
            if "x32" in wanted:
                p.goto(x32)
            else:
                p.ret(RET_KILL_PROCESS)
            _section(p, _rules(profile, TABLES[sub], default), default, True,
                     range(max(TABLES[sub].values()) + 1))
            if "x32" in wanted:
                p.place(x32)
                _section(p, _rules(profile, TABLES["x32"], default), default, False,
                         range(X32_SYSCALL_BIT, max(TABLES["x32"].values()) + 1))
        else:
            _section(p, _rules(profile, TABLES[sub], default), default, sub in WIDE,
                     range(max(TABLES[sub].values()) + 1))
    if len(p) > BPF_MAXINSNS:
        raise ValueError(f"seccomp: program has {len(p)} instructions (max {BPF_MAXINSNS})")
    return p.assemble()

