"""Mount an overlayfs with any number of lower layers, on any kernel from 5.x to today's.

mount(2) copies one page of options, about 200 absolute lowerdir paths. Past that:
- Linux 6.8+ takes the lowers one by one through the new mount API (`fsconfig lowerdir+`);
- older kernels (Debian 12's 6.1, Ubuntu 22.04's 5.15, RHEL 9's 5.14) only take one lowerdir
  string, resolved against the caller's cwd when the superblock is made. So each lower is opened
  as an O_PATH fd and named by its number from a cwd of /proc/self/fd (`lowerdir=7:8:9`, the
  magic links resolve to the layers): 500 layers, the kernel's maximum, fit in ~3 KiB. This is
  containerd's short-relative-path idea without depending on how snapshot dirs are named.
  The cwd is per process, so a threaded caller (berthd) has mount(8) do the mount in a child that
  `subprocess` chdirs after fork; a single-threaded one (container init) chdirs itself.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from dataclasses import dataclass, field

from runtime import libc

MAX_MOUNT_DATA = 4000  # mount(2) and the legacy fs context copy at most one page of options
FD_DIR = "/proc/self/fd"


@dataclass
class OverlaySpec:
    """lowers are listed top layer first, as overlayfs wants; upper and work go together."""

    lowers: list[str]
    upper: str | None = None
    work: str | None = None
    options: list[str] = field(default_factory=list)

    def data(self, lowers: list[str]) -> str:
        """mount(2) option string with the lowers named as given."""
        opts = ["lowerdir=" + ":".join(lowers)]
        if self.upper and self.work:
            opts += [f"upperdir={self.upper}", f"workdir={self.work}"]
        return ",".join(opts + self.options)


def mount(target: str, spec: OverlaySpec, *, threaded: bool) -> None:
    """Mount spec at target; `threaded` callers must not chdir, so they get a helper process."""
    if not spec.lowers:
        raise ValueError("an overlay needs at least one lower layer")
    data = spec.data(spec.lowers)
    if len(data) < MAX_MOUNT_DATA and all(map(_plain, [*spec.lowers, spec.upper or "",
                                                       spec.work or ""])):
        libc.mount("overlay", target, "overlay", 0, data)
    elif appending_supported():
        mount_appending(target, spec)
    else:
        mount_by_fd(target, spec, threaded=threaded)


@functools.cache
def appending_supported() -> bool:
    """Probe for `lowerdir+` with a path that cannot exist: 6.8+ resolves it at once (ENOENT);
    6.5-6.7 reject the key; older kernels keep any key unchecked in a legacy context."""
    fs = libc.fsopen("overlay")
    try:
        libc.fsconfig(fs, libc.FSCONFIG_SET_STRING, "lowerdir+", FD_DIR + "/-1")
    except OSError as e:
        return e.errno == errno.ENOENT
    finally:
        os.close(fs)
    return False


def mount_appending(target: str, spec: OverlaySpec) -> None:
    """New mount API, one `lowerdir+` per layer (Linux 6.8+)."""
    fs = libc.fsopen("overlay")
    try:
        for lower in spec.lowers:
            libc.fsconfig(fs, libc.FSCONFIG_SET_STRING, "lowerdir+", lower)
        if spec.upper and spec.work:
            libc.fsconfig(fs, libc.FSCONFIG_SET_STRING, "upperdir", spec.upper)
            libc.fsconfig(fs, libc.FSCONFIG_SET_STRING, "workdir", spec.work)
        for opt in spec.options:
            key, eq, value = opt.partition("=")
            if eq:
                libc.fsconfig(fs, libc.FSCONFIG_SET_STRING, key, value)
            else:
                libc.fsconfig(fs, libc.FSCONFIG_SET_FLAG, key)
        libc.fsconfig(fs, libc.FSCONFIG_CMD_CREATE)
        mfd = libc.fsmount(fs)
    finally:
        os.close(fs)
    try:
        libc.move_mount_fd(mfd, target)
    finally:
        os.close(mfd)


def mount_by_fd(target: str, spec: OverlaySpec, *, threaded: bool) -> None:
    """Classic mount(2) with each lower named by its fd number from a cwd of /proc/self/fd."""
    target = os.path.abspath(target)
    fds: list[int] = []
    try:
        for lower in spec.lowers:
            fds.append(os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        for path in (spec.upper, spec.work):
            if path and not _plain(path):
                raise ValueError(f"overlay on {target}: {path!r} holds one of , : \\ which "
                                 "this kernel's single option string cannot carry")
        data = spec.data([str(fd) for fd in fds])
        if len(data) >= MAX_MOUNT_DATA:
            raise OSError(errno.E2BIG, f"overlay on {target}: the options do not fit in one "
                          f"page even with the {len(spec.lowers)} layers named by fd number")
        if threaded:
            _mount_in_child(target, data, fds)
        else:
            _mount_in_fd_dir(target, data)
    finally:
        for fd in fds:
            os.close(fd)


def _plain(path: str) -> bool:
    """Whether a path can sit in a classic option string (',' splits options, ':' lowers)."""
    return not any(c in path for c in ",:\\")


def _mount_in_fd_dir(target: str, data: str) -> None:
    """chdir to our own fd dir for the mount, then back; single-threaded callers only."""
    back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(FD_DIR)
        try:
            libc.mount("overlay", target, "overlay", 0, data)
        finally:
            os.fchdir(back)
    finally:
        os.close(back)


def _mount_in_child(target: str, data: str, fds: list[int]) -> None:
    """mount(8) in a child that inherits the fds (same numbers) and starts in its own fd dir."""
    try:
        r = subprocess.run(["mount", "-t", "overlay", "-o", data, "overlay", target],
                           cwd=FD_DIR, pass_fds=fds, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "mount(8) (util-linux) is missing: deep images need it on "
                      "kernels before 6.8") from None
    if r.returncode != 0:
        raise OSError(errno.EINVAL, f"mount overlay on {target}: {r.stderr.strip()}")
