"""Seccomp for container init: compile an OCI profile to classic BPF and install it.

Caller's order in the container init (single-threaded, after fork, before exec):
1. compile in the parent or early (`compile_profile`), since it needs imports and allocations;
2. drop capabilities (runtime.caps) and set PR_SET_NO_NEW_PRIVS (`set_no_new_privs`) unless the
   process keeps CAP_SYS_ADMIN; the kernel refuses a filter otherwise (EACCES);
3. `load` as the last step before execve, so the filter does not constrain the init itself.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Iterable
from pathlib import Path

from runtime.seccomp.compiler import compile_profile, filter_flags, native_arch

__all__ = ["compile_profile", "default_profile", "filter_flags", "load", "set_no_new_privs"]

_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SYS_PRCTL = {"x86_64": 157, "aarch64": 167}
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def set_no_new_privs() -> None:
    """Sets PR_SET_NO_NEW_PRIVS, which lets an unprivileged process install a filter."""
    if _libc.syscall(_SYS_PRCTL[native_arch()], _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def load(bpf: bytes, flags: int = 0) -> None:
    """Installs a compiled filter on the calling thread via seccomp(2)."""
    if not bpf or len(bpf) % 8:
        raise ValueError("seccomp: BPF program must be a non-empty multiple of 8 bytes")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    rc = _libc.syscall(
        _SYS_SECCOMP[native_arch()], _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog)
    )
    err = ctypes.get_errno()
    del buf  # referenced until here: the kernel copies the program during the call
    if rc < 0:
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")


def default_profile(caps: Iterable[str] | None = None, arch: str | None = None) -> dict:
    """RuntimeDefault for a container whose bounding set is `caps` (default: runtime.caps' 14)."""
    from runtime.caps import default_caps

    native = arch or native_arch()
    have = set(default_caps() if caps is None else caps)
    raw = json.loads(Path(__file__).with_name("default.json").read_text())
    syscalls = []
    for entry in raw["syscalls"]:
        inc, exc = entry.get("includes", {}), entry.get("excludes", {})
        if not set(inc.get("caps", [])) <= have or native not in inc.get("arches", [native]):
            continue
        if exc.get("caps") and set(exc["caps"]) <= have:
            continue
        syscalls.append({k: v for k, v in entry.items() if k not in ("includes", "excludes",
                                                                    "comment")})
    return {
        "defaultAction": raw["defaultAction"],
        "defaultErrnoRet": raw["defaultErrnoRet"],
        "architectures": raw["archMap"][native],
        "syscalls": syscalls,
    }
