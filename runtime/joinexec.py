"""The exec helper (runtime/joinexec.c): build and install it, and start it for one exec.

An exec into a running container is a posix_spawn (vfork + exec) of this small static C
binary, which joins the container and execs the process; joinexec.c says why C and which
steps it takes in which order. Everything it needs is computed here, before the spawn, and
passed as a strict argument list plus a fixed fd layout (STATUS_FD, SECCOMP_FD, NS_FD_BASE).
Build: `python -m runtime.joinexec DIR` (deploy/install.sh installs into /usr/libexec/berth)
compiles joinexec.c (the steps) with joinexec_plan.c (the plan it decodes; joinexec.h).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import os
import subprocess
from pathlib import Path

from runtime import caps
from runtime import spec as oci
from runtime.namespaces import NsPlan

INSTALL_DIR = "/usr/libexec/berth"
HELPER = os.path.join(INSTALL_DIR, "joinexec")
SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("joinexec.c", "joinexec_plan.c", "joinexec.h"))
CFLAGS = ["-O2", "-static", "-Wall", "-Wextra", "-Werror"]
STATUS_FD, SECCOMP_FD, NS_FD_BASE = 3, 4, 5
_MAX_BPF = 4096 * 8  # BPF_MAXINSNS: the whole program always fits in a pipe's 64 KiB buffer
_FIRST_HIGH_FD = 64  # sources are moved above the layout first so no dup2 clobbers another


def stamp(sources: tuple[Path, ...] = SOURCES) -> str:
    """Identifies a build of these sources (each one, the header too) with these flags:
    compiled in, checked by installed()."""
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    for src in sources:
        data = src.read_bytes()
        digest.update(f"\0{src.name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


def build(out: str) -> None:
    """gcc, static: no dynamic loader at start (and no library a container could reach)."""
    tmp = out + ".tmp"
    units = [str(src) for src in SOURCES if src.suffix == ".c"]
    subprocess.run(["gcc", *CFLAGS, f'-DBERTH_STAMP="{stamp()}"', "-o", tmp, *units],
                   check=True, capture_output=True, text=True)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


def installed(path: str = HELPER) -> bool:
    """The file at path is a build of these sources (not an older checkout's)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return False
    return f"berth-joinexec:{stamp()}".encode() in data


def install(dest: str = INSTALL_DIR) -> str:
    """Root-owned 0755 in a root-owned directory: nothing in a container can rewrite it."""
    os.makedirs(dest, mode=0o755, exist_ok=True)
    path = os.path.join(dest, "joinexec")
    if not installed(path):
        build(path)
    return path


def _env(proc: oci.Process) -> tuple[dict[str, str], bool]:
    """The exec env as execve will get it (later duplicates win), and whether HOME is missing
    (runc's rule: then the helper takes it from the container's /etc/passwd)."""
    env = dict(e.partition("=")[::2] for e in proc.env)
    home = not env.get("HOME")
    if home:
        env.pop("HOME", None)
    return env, home


def argv(proc: oci.Process, plan: NsPlan, cgroup_files: list[str], bpf: bytes | None) -> list[str]:
    """The helper's arguments; ValueError/ProcessError for what the plan cannot express."""
    if bpf is not None and (not bpf or len(bpf) % 8 or len(bpf) > _MAX_BPF):
        raise oci.ProcessError(f"seccomp: a program of {len(bpf)} bytes")
    c = proc.capabilities or oci.Capabilities()
    u = proc.user
    env, home = _env(proc)
    args = ["joinexec"]
    args += [f"ns={typ}:{oci.NS_FLAGS[typ]}" for typ in _join_order(plan)]
    args += [f"cgroup={name}" for name in cgroup_files]
    if proc.oom_score_adj is not None:
        args.append(f"oom={proc.oom_score_adj}")
    for rl in proc.rlimits:
        if rl.type not in oci.RLIMITS:
            raise oci.ProcessError(f"unknown rlimit {rl.type}")
        args.append(f"rlimit={rl.type}:{oci.RLIMITS[rl.type]}:{rl.soft & (2**64 - 1)}:"
                    f"{rl.hard & (2**64 - 1)}")
    args += [
        f"umask={0o022 if u.umask is None else u.umask:o}",
        f"tty={int(proc.terminal)}", f"nnp={int(proc.no_new_privileges)}", f"home={int(home)}",
        f"seccomp={len(bpf) if bpf else 0}", f"lastcap={caps.LAST_CAP}",
        f"bounding={caps.mask(c.bounding):x}", f"effective={caps.mask(c.effective):x}",
        f"permitted={caps.mask(c.permitted):x}", f"inheritable={caps.mask(c.inheritable):x}",
        f"ambient={caps.mask(c.ambient):x}",
        f"uid={u.uid}", f"gid={u.gid}", *(f"group={g}" for g in u.additional_gids),
        f"path={env.get('PATH', oci.DEFAULT_PATH)}", f"cwd={proc.cwd}", f"env={len(env)}",
        "--", *(f"{k}={v}" for k, v in env.items()), *proc.args,
    ]
    if any("\0" in a for a in args):  # execve would cut the string there
        raise ValueError("embedded null byte")
    return args


def _join_order(plan: NsPlan) -> list[str]:
    """namespaces.join_all's order; pid is not joined (the spawn already lands in it)."""
    return [t for t in oci.NS_JOIN_ORDER if t in plan.join and t != "pid"]


def spawn(args: list[str], plan: NsPlan, stdio: tuple[int, int, int], bpf: bytes | None,
          status_w: int, handled: list[int]) -> int:
    """posix_spawn the helper with the fd layout joinexec.c expects; returns its pid.

    Every source fd is first duplicated above the layout (close-on-exec), so a source that
    sits at a target number is never overwritten before its own dup2."""
    sources = [*stdio, status_w] + [plan.join[t] for t in _join_order(plan)]
    targets = [0, 1, 2, STATUS_FD] + list(range(NS_FD_BASE, NS_FD_BASE + len(sources) - 4))
    high: list[int] = []
    bpf_r = -1
    try:
        if bpf:
            bpf_r, bpf_w = os.pipe()
            try:
                os.write(bpf_w, bpf)  # at most 32 KiB: never blocks on an empty pipe
            finally:
                os.close(bpf_w)
            sources.append(bpf_r)
            targets.append(SECCOMP_FD)
        for fd in sources:
            high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FIRST_HIGH_FD))
        actions = [(os.POSIX_SPAWN_DUP2, h, t) for h, t in zip(high, targets, strict=True)]
        return os.posix_spawn(_helper(), args, {}, file_actions=actions, setsid=True,
                              setsigdef=handled, setsigmask=())
    finally:
        for fd in high:
            os.close(fd)
        if bpf_r >= 0:
            os.close(bpf_r)


@functools.cache
def _helper() -> str:
    """Checked once per monitor: a missing or stale helper (whose argument list may differ
    from ours) is an install problem, said plainly rather than as a bad-argument error."""
    if not installed():
        raise oci.ProcessError(f"{HELPER} is missing or not built from "
                               f"{SOURCES[0].parent}/joinexec*: run deploy/install.sh")
    return HELPER


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m runtime.joinexec")
    parser.add_argument("dir", nargs="?", default=INSTALL_DIR)
    print(install(parser.parse_args().dir))
