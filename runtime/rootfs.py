"""Build the container's mount namespace: rootfs, OCI mounts, /dev, masks, then pivot_root."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime import idmap, libc, overlay, propagation
from runtime import spec as oci
from runtime.mounts import (
    clean,
    ensure,
    is_dir_fd,
    locked_flags,
    open_in_root,
    parse_options,
    remount_at,
    set_propagation,
)

_DEV_NODES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
              ("urandom", 1, 9), ("tty", 5, 0)]
_DEV_LINKS = [("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
_ROOT_PROPAGATION = {"private": libc.MS_PRIVATE, "rprivate": libc.MS_PRIVATE | libc.MS_REC,
                     "slave": libc.MS_SLAVE, "rslave": libc.MS_SLAVE | libc.MS_REC,
                     "shared": libc.MS_SHARED, "rshared": libc.MS_SHARED | libc.MS_REC}


OVERLAY_ANNOTATION = "io.berth.rootfs.overlay"


@dataclass
class Overlay:
    """An overlay rootfs: lowerdirs top-first, plus upper and work dirs on a non-overlay fs."""

    lowerdirs: list[str]
    upperdir: str | None = None
    workdir: str | None = None
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Overlay | None:
        """The overlay a caller asked for through the OVERLAY_ANNOTATION (a JSON object)."""
        raw = (spec.get("annotations") or {}).get(OVERLAY_ANNOTATION)
        if not raw:
            return None
        d = json.loads(raw)
        return cls(list(d["lowerdirs"]), d.get("upperdir"), d.get("workdir"),
                   list(d.get("options") or []))

    def mount(self, target: str) -> None:
        """Mount at target; container init is single-threaded, so it may chdir to do it."""
        spec = overlay.OverlaySpec(self.lowerdirs, self.upperdir, self.workdir, self.options)
        overlay.mount(target, spec, threaded=False)


class HostDevNull:
    """The host's /dev/null, opened and verified before the container can tamper with anything.

    Masks bind this fd, never the container's /dev/null, which could be a swapped-in symlink
    (CVE-2025-31133).
    """

    def __init__(self) -> None:
        self.fd = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
        st = os.fstat(self.fd)
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or os.minor(st.st_rdev) != 3:
            raise OSError(errno.EINVAL, "host /dev/null is not the 1:3 char device")

    @property
    def path(self) -> str:
        return libc.proc_fd(self.fd)


def _binds(spec: dict[str, Any]) -> list[tuple[int, oci.Mount]]:
    """(index in oci.mounts, mount) of every bind mount, the ones a user ns init attaches."""
    return [(i, m) for i, m in enumerate(oci.mounts(spec))
            if m.type == "bind" or parse_options(m.options).is_bind]


def bind_trees(spec: dict[str, Any]) -> list[int]:
    """Host side, before the fork: a detached clone of every bind source (see idmap)."""
    return idmap.bind_trees([(m.source, bool(parse_options(m.options).flags & libc.MS_REC))
                             for _, m in _binds(spec)])


def idmap_trees(spec: dict[str, Any], trees: list[int], userns_path: str) -> None:
    """Host side, once the maps are written: idmap the clones whose mounts ask for it."""
    wanted = [(fd, m) for fd, (_, m) in zip(trees, _binds(spec), strict=True)
              if idmap.wants_idmap(m.options)]
    if not wanted:
        return
    ns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for fd, m in wanted:
            idmap.set_idmap(fd, ns, m.source)
    finally:
        os.close(ns)


def prepare(spec: dict[str, Any], rootfs: str, *, overlay: Overlay | None = None,
            console_fd: int | None = None, trees: list[int] | None = None,
            before_pivot: Callable[[], None] | None = None) -> None:
    """Set up the mount namespace we are already in, ending pivoted into rootfs.

    `before_pivot` runs once every mount and device is in place and the host's tree is still
    visible: where the OCI create-time hooks belong (`runtime/hooks.py`).

    "/" becomes rslave unless linux.rootfsPropagation says otherwise (runc's default): nothing
    we mount propagates to the host, yet rslave volumes still see host mounts appear. rshared
    (a Bidirectional volume) keeps every mount in the host's peer groups, so the volume's bind
    joins its source's group; the mount holding the rootfs is then made private, as runc does,
    so that nothing mounted inside the rootfs reaches the host and pivot_root accepts it.
    """
    lin = oci.linux(spec)
    prop = _ROOT_PROPAGATION[lin.get("rootfsPropagation") or "rslave"]
    libc.mount(None, "/", None, prop)
    if prop & libc.MS_SHARED:
        libc.mount(None, propagation.mount_of(rootfs).mount_point, None, libc.MS_PRIVATE)
    overlay = overlay or Overlay.from_spec(spec)
    if overlay is not None:
        overlay.mount(rootfs)
    libc.mount(rootfs, rootfs, None, libc.MS_BIND | libc.MS_REC)
    devnull = HostDevNull()
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dev_is_tmpfs = False
        tree_of = dict(zip([i for i, _ in _binds(spec)], trees or [], strict=False))
        for i, m in enumerate(oci.mounts(spec)):
            _mount_one(rootfd, m, tree_of.get(i))
            dev_is_tmpfs |= clean(m.destination) == "dev" and m.type == "tmpfs"
        if dev_is_tmpfs:
            _populate_dev(rootfd)
        _create_devices(rootfd, lin.get("devices") or [])
        if console_fd is not None:
            _bind_file(rootfd, "/dev/console", _console_source(console_fd))
        if before_pivot is not None:
            before_pivot()
        for path in lin.get("maskedPaths") or []:
            _mask(rootfd, path, devnull)
        for path in lin.get("readonlyPaths") or []:
            _readonly(rootfd, path)
        _pivot(rootfd)
    finally:
        os.close(rootfd)
        os.close(devnull.fd)
    if oci.root(spec)[1]:
        libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY
                   | _locked("/"))


def _locked(path: str) -> int:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return locked_flags(fd)
    finally:
        os.close(fd)


def _source_is_dir(m: oci.Mount) -> bool:
    try:
        return stat.S_ISDIR(os.stat(m.source).st_mode)
    except OSError as e:
        raise OSError(e.errno, f"mount {m.destination}: source {m.source}: "
                      f"{os.strerror(e.errno or 0)}") from None


def _mount_one(rootfd: int, m: oci.Mount, tree: int | None = None) -> None:
    """One mounts[] entry: create the target in-root, mount through the fd, then fix flags.

    A bind whose source was cloned host-side (`tree`, user namespaces) attaches the clone.
    """
    opts = parse_options(m.options)
    bind = opts.is_bind or m.type == "bind"
    try:
        if bind:
            flags = opts.flags | libc.MS_BIND
            is_dir = is_dir_fd(tree) if tree is not None else _source_is_dir(m)
            fd = ensure(rootfd, m.destination, directory=is_dir)
            try:
                if tree is not None:
                    idmap.attach(tree, libc.proc_fd(fd))
                else:
                    libc.mount(m.source, libc.proc_fd(fd), None,
                               flags & (libc.MS_BIND | libc.MS_REC))
            finally:
                os.close(fd)
            rest = flags & ~(libc.MS_BIND | libc.MS_REC | libc.MS_REMOUNT)
            if rest:
                remount_at(rootfd, m.destination, rest)
        else:
            fd = ensure(rootfd, m.destination, directory=True)
            try:
                _typed_mount(rootfd, fd, m, opts.flags & ~libc.MS_REMOUNT, opts.data)
            finally:
                os.close(fd)
        if opts.propagation:
            set_propagation(rootfd, m.destination, opts.propagation)
    except OSError as e:
        if (e.strerror or "").startswith("mount "):
            raise
        raise OSError(e.errno, f"mount {m.destination}: {os.strerror(e.errno or 0)}") from None


def _typed_mount(rootfd: int, fd: int, m: oci.Mount, flags: int, data: str) -> None:
    """A filesystem mount onto a verified target fd."""
    if m.type in ("cgroup", "cgroup2"):
        _mount_cgroup(rootfd, m.destination, fd, flags)
        return
    try:
        libc.mount(m.source or m.type, libc.proc_fd(fd), m.type, flags, data or None)
    except PermissionError:
        # In a user namespace, sysfs and mqueue need privilege over the net and ipc namespaces,
        # which a pod's host-owned ones withhold. runc's answer for sysfs: bind the host's /sys,
        # read-only; an mqueue of the host's ipc namespace would be the wrong one, so none.
        if m.type == "mqueue":
            return
        if m.type != "sysfs":
            raise
        libc.mount("/sys", libc.proc_fd(fd), None, libc.MS_BIND | libc.MS_REC)
        remount_at(rootfd, m.destination, libc.MS_RDONLY | (flags & ~libc.MS_RDONLY))


def _host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, super options) of the hierarchies under /sys/fs/cgroup."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4]
            fstype, _src, sopts = right.split()[:3]
            if fstype in ("cgroup", "cgroup2") and mnt.startswith("/sys/fs/cgroup"):
                out.append((mnt, fstype, sopts))
    return out


def _mount_cgroup(rootfd: int, dest: str, fd: int, flags: int) -> None:
    """Fresh read-only cgroup mounts (never a bind of the host tree, whose submounts stay rw).

    v2 host: one cgroup2 mount. v1 host: a tmpfs holding one mount per hierarchy, each
    made by mounting the same hierarchy again with its controllers, read-only.
    """
    ro = flags | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    hier = _host_cgroup_mounts()
    if any(mnt == "/sys/fs/cgroup" and t == "cgroup2" for mnt, t, _ in hier):
        libc.mount("cgroup", libc.proc_fd(fd), "cgroup2", ro)
        return
    libc.mount("tmpfs", libc.proc_fd(fd), "tmpfs", (flags & ~libc.MS_RDONLY) | libc.MS_NOSUID
               | libc.MS_NODEV | libc.MS_NOEXEC, "mode=755")
    for mnt, fstype, sopts in hier:
        name = mnt[len("/sys/fs/cgroup/"):]
        if not name or "/" in name:
            continue
        opts = ",".join(o for o in sopts.split(",") if o not in ("rw", "ro"))
        sub = ensure(rootfd, f"{dest}/{name}", directory=True)
        try:
            libc.mount("cgroup", libc.proc_fd(sub), fstype, ro, opts or None)
        except PermissionError:
            pass  # a user namespace without its own cgroup namespace may not mount v1
        finally:
            os.close(sub)
    remount_at(rootfd, dest, libc.MS_RDONLY, bind=False)


def _bind_file(rootfd: int, dest: str, source: str) -> None:
    """Bind a host file (device node, console) onto an in-root regular-file placeholder."""
    fd = ensure(rootfd, dest, directory=False)
    try:
        if is_dir_fd(fd):
            raise OSError(errno.EISDIR, f"mount {dest}: target is a directory")
        libc.mount(source, libc.proc_fd(fd), None, libc.MS_BIND)
    finally:
        os.close(fd)


def _console_source(fd: int) -> str:
    """Path of our pty slave in this mount namespace; the fd's own mount is the old ns's.

    bind mounts only take sources from the caller's namespace, so /proc/self/fd/N fails with
    EINVAL; the copied /dev/pts path works and is checked to be the very same device.
    """
    path = os.readlink(libc.proc_fd(fd))
    want = os.fstat(fd).st_rdev
    st = os.stat(path)
    if not path.startswith("/dev/pts/") or not stat.S_ISCHR(st.st_mode) or st.st_rdev != want:
        raise OSError(errno.ENOTTY, f"console: stdin {path} is not a pty slave")
    return path


def _populate_dev(rootfd: int) -> None:
    """Standard device nodes: mknod when allowed, else bind the host node (user namespaces)."""
    devfd = open_in_root(rootfd, "/dev")
    try:
        for name, major, minor in _DEV_NODES:
            try:
                os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=devfd)
                os.chmod(name, 0o666, dir_fd=devfd)
            except PermissionError:
                _bind_file(rootfd, f"/dev/{name}", f"/dev/{name}")
        for name, target in _DEV_LINKS:
            with contextlib.suppress(FileExistsError):
                os.symlink(target, name, dir_fd=devfd)
    finally:
        os.close(devfd)


def _create_devices(rootfd: int, devices: list[dict[str, Any]]) -> None:
    """linux.devices: mknod each node in-root with the requested owner and mode."""
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for d in devices:
        path = clean(d["path"])
        parent, _, name = path.rpartition("/")
        pfd = ensure(rootfd, "/" + parent, directory=True)
        try:
            mode = int(d.get("fileMode", 0o666)) & 0o7777
            dev = os.makedev(int(d.get("major", 0)), int(d.get("minor", 0)))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=pfd)
            os.mknod(name, kinds[d["type"]] | mode, dev, dir_fd=pfd)
            os.chmod(name, mode, dir_fd=pfd)
            os.chown(name, int(d.get("uid", 0)), int(d.get("gid", 0)), dir_fd=pfd,
                     follow_symlinks=False)
        finally:
            os.close(pfd)


def _mask(rootfd: int, path: str, devnull: HostDevNull) -> None:
    """Hide a path: host /dev/null over files, an empty read-only tmpfs over directories."""
    try:
        fd = open_in_root(rootfd, path)  # a symlink is followed, but only inside the rootfs
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        target = libc.proc_fd(fd)
        if stat.S_ISDIR(st.st_mode):
            libc.mount("tmpfs", target, "tmpfs", libc.MS_RDONLY, "size=0,mode=755")
        else:
            libc.mount(devnull.path, target, None, libc.MS_BIND)
    except OSError as e:
        raise OSError(e.errno, f"mask {path}: {os.strerror(e.errno or 0)}") from None
    finally:
        os.close(fd)


def _readonly(rootfd: int, path: str) -> None:
    """Make a subtree read-only by binding it onto itself and remounting the bind ro."""
    try:
        fd = open_in_root(rootfd, path)
    except FileNotFoundError:
        return
    try:
        libc.mount(libc.proc_fd(fd), libc.proc_fd(fd), None, libc.MS_BIND | libc.MS_REC)
        remount_at(rootfd, path, libc.MS_RDONLY)
    except OSError as e:
        raise OSError(e.errno, f"readonly {path}: {os.strerror(e.errno or 0)}") from None
    finally:
        os.close(fd)


def _pivot(rootfd: int) -> None:
    """pivot_root(".", ".") then detach the old root, so no host path stays reachable."""
    oldroot = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(rootfd)
        libc.pivot_root(".", ".")
        # The old root is stacked on "/": enter it by fd, as runc does, since "." still names
        # the new root's own mount. Making it a slave keeps the detach from reaching the host;
        # done on the new root it would turn a Bidirectional volume into a one-way slave.
        os.fchdir(oldroot)
    finally:
        os.close(oldroot)
    libc.mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC)
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")
