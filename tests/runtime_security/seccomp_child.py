"""Helper run as a fresh single-threaded process: compile, fork, load a filter in the child, probe.

argv[1] is JSON: {"profile": <OCI seccomp object> | "default", "probes": [[kind, *args], ...]}.
Prints JSON {"results": [...], "signal": n}: one [ret, errno] per probe, signal if it was killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runtime.seccomp import compile_profile, default_profile, load, set_no_new_privs  # noqa: E402
from runtime.seccomp._syscalls import TABLES  # noqa: E402
from runtime.seccomp.compiler import native_arch  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def probe(kind: str, *args: object) -> list[object]:
    if kind == "status":
        with open("/proc/self/status") as f:
            return [line.split()[1] for line in f if line.startswith("Seccomp:")]
    if kind == "mkdir":
        try:
            os.mkdir(str(args[0]))
            os.rmdir(str(args[0]))
            return [0, 0]
        except OSError as e:
            return [-1, e.errno]
    if kind == "exec":
        return [subprocess.run(["/bin/true"]).returncode, 0]
    name, *rest = args if kind == "raw" else (kind, *args)
    nr = int(name) if isinstance(name, int) else TABLES[native_arch()][str(name)]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(int(a)) for a in rest))  # type: ignore[call-overload]
    return [int(ret), ctypes.get_errno() if ret == -1 else 0]


def main() -> None:
    spec = json.loads(sys.argv[1])
    profile = default_profile() if spec["profile"] == "default" else spec["profile"]
    bpf = compile_profile(profile)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        set_no_new_privs()
        load(bpf)
        out = [probe(*p) for p in spec["probes"]]
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    _, status = os.waitpid(pid, 0)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    print(json.dumps({"results": json.loads(data) if data else None, "signal": sig}))


if __name__ == "__main__":
    main()
