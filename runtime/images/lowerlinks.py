"""Hard links from a layer to files of its lower layers, made once the lowers are there.

A detached unpack cannot see the parent layers, so `Applier` makes each such link an empty
placeholder (`Link`). Here the placeholder takes the lower file's bytes and metadata, and is
linked in at the target's path as its copy-up, so the two names stay one inode as in the tar.
"""

from __future__ import annotations

import os
import stat

from runtime.images._sys import openat2
from runtime.images.applier import Applier, Link, UnpackError, split
from runtime.images.fsops import clone_meta, copy_fd


def resolve_link(ap: Applier, link: Link) -> None:
    """Fill a placeholder from the lower file; link it in as the copy-up unless replaced."""
    ldir, lbase = split(link.rel)
    try:
        lpfd = ap.open_dir(ldir, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        try:
            fd = openat2(lpfd, lbase, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            if os.fstat(fd).st_ino != link.ino:
                return  # a later entry replaced the link
            src, st = _lower_file(ap.lowers or [], "/".join(link.target))
            try:
                copy_fd(src, fd)
                clone_meta(src, st, fd)
            finally:
                os.close(src)
        finally:
            os.close(fd)
        tpfd, tst = ap.own(link.target)
        if tst is not None:
            if tpfd >= 0:
                os.close(tpfd)
            return  # the layer has its own entry there (or it already is this inode)
        if tpfd < 0:
            tpfd = ap.open_dir(link.target[:-1], create=True)
        try:
            os.link(lbase, link.target[-1], src_dir_fd=lpfd, dst_dir_fd=tpfd,
                    follow_symlinks=False)
        finally:
            os.close(tpfd)
    finally:
        os.close(lpfd)


def _lower_file(lowers: list[int], rel: str) -> tuple[int, os.stat_result]:
    """Read fd and stat of a regular file in the nearest lower layer that has rel."""
    for lfd in lowers:
        try:
            probe = openat2(lfd, rel, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            continue
        st = os.fstat(probe)
        os.close(probe)
        if not stat.S_ISREG(st.st_mode):  # never open a lower fifo or device for reading
            raise UnpackError(f"hardlink target {rel!r} in a lower layer is not a file")
        return openat2(lfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), st
    raise UnpackError(f"hardlink target {rel!r} is not in the layer chain")
