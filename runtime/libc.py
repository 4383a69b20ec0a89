"""ctypes wrappers for the namespace, mount and process syscalls Python 3.11 lacks."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

# clone/unshare/setns flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# umount2(2) flags
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

CLOSE_RANGE_CLOEXEC = 1 << 2

# new mount API
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4

_NR = {
    "x86_64": {"pivot_root": 155},
    "aarch64": {"pivot_root": 41},
    "riscv64": {"pivot_root": 41},
}
# Numbers >= 424 are shared by every architecture since the unified syscall table.
_SYS_PIDFD_SEND_SIGNAL = 424
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_PIDFD_OPEN = 434
_SYS_CLOSE_RANGE = 436
_SYS_CLONE3 = 435
_SYS_OPENAT2 = 437

_arch = platform.machine()
if _arch == "arm64":
    _arch = "aarch64"
if _arch not in _NR:
    raise ImportError(f"runtime.libc: syscall numbers unknown on {platform.machine()}")
_SYS_PIVOT_ROOT = _NR[_arch]["pivot_root"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


# PyDLL keeps the GIL across the call, which PyOS_AfterFork_Child expects to hold in the child
_pyapi = ctypes.PyDLL(None, use_errno=True)
_pyapi.syscall.restype = ctypes.c_long


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _check(ret: int, what: str, path: str | None = None) -> int:
    """Turn a -1 return into an OSError carrying errno, so callers can report EPERM etc."""
    if ret == -1:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what} {path}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    """Leave the given namespaces for new ones."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace(s) named by an ns fd or a pidfd."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2) with an errno-bearing OSError naming the target."""
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(ret, "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2); glibc has no wrapper."""
    ret = _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old))
    _check(int(ret), "pivot_root", new_root)


def pidfd_open(pid: int, flags: int = 0) -> int:
    """A pidfd pins the process identity so signals never hit a recycled pid."""
    return _check(int(_libc.syscall(_SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(flags))),
                  "pidfd_open")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal through a pidfd (race-free against pid reuse)."""
    ret = _libc.syscall(_SYS_PIDFD_SEND_SIGNAL, ctypes.c_int(pidfd), ctypes.c_int(sig),
                        None, ctypes.c_uint(0))
    _check(int(ret), "pidfd_send_signal")


def fork_with_flags(flags: int) -> int:
    """fork() that creates namespaces in the same step (clone3), as os.fork() cannot.

    Needed when the child must own a new pid namespace *inside* a new user namespace. Python's
    own before/after-fork hooks run as for os.fork(). Single-threaded callers only.
    """
    args = _CloneArgs(flags=flags, exit_signal=17)  # SIGCHLD: an ordinary waitable child
    _pyapi.PyOS_BeforeFork()
    pid = int(_pyapi.syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))))
    if pid == 0:
        _pyapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return pid


def fsopen(fstype: str) -> int:
    """Open a filesystem context (new mount API): no 4 KiB cap on the options."""
    return _check(int(_libc.syscall(_SYS_FSOPEN, ctypes.c_char_p(fstype.encode()),
                                    ctypes.c_uint(FSOPEN_CLOEXEC))), f"fsopen {fstype}")


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    """Set one option of a filesystem context, or run a command such as CMD_CREATE."""
    ret = _libc.syscall(_SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), _b(key), _b(value),
                        ctypes.c_int(0))
    _check(int(ret), f"fsconfig {key or cmd}")


def fsmount(fd: int) -> int:
    """Turn a created filesystem context into a detached mount fd."""
    return _check(int(_libc.syscall(_SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                                    ctypes.c_uint(0))), "fsmount")


def move_mount_fd(mount_fd: int, target: str) -> None:
    """Attach a detached mount fd at target."""
    ret = _libc.syscall(_SYS_MOVE_MOUNT, ctypes.c_int(mount_fd), ctypes.c_char_p(b""),
                        ctypes.c_int(-100), _b(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(int(ret), "move_mount", target)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def set_pdeathsig(sig: int) -> None:
    """Get a signal when the parent dies, so orphans of a crashed monitor do not linger."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    """Irreversibly forbid privilege gain through exec (setuid bits, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper(on: bool = True) -> None:
    """Adopt orphaned descendants so they get reaped (and waited) by us, not the VM's pid 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def set_dumpable(on: bool) -> None:
    """Non-dumpable hides /proc/<pid>/exe and friends from other (non-CAP_SYS_PTRACE) processes."""
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0,
            resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) -> int:
    """openat2(2): resolve path with dirfd as '/' so symlinks can never escape it."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = _b(path or ".")
    while True:
        fd = int(_libc.syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(raw),
                               ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EINTR, errno.EAGAIN):
            raise OSError(err, f"open {path}: {os.strerror(err)}", path)


def sethostname(name: str) -> None:
    """sethostname(2) in the current UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    """setdomainname(2) in the current UTS namespace."""
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), "setdomainname")


def setgroups(gids: list[int]) -> None:
    """Replace the supplementary group list."""
    os.setgroups(gids)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """Close (or mark close-on-exec) a whole fd range in one syscall."""
    ret = _libc.syscall(_SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last),
                        ctypes.c_uint(flags))
    _check(int(ret), "close_range")


def proc_fd(fd: int) -> str:
    """Path of an fd in our own fd table, used as a verified mount target."""
    return f"/proc/self/fd/{fd}"
