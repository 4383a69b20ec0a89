"""An overlay upper dir as an OCI layer: a gzip'd tar with `.wh.` whiteouts, hashed as written.

A build step's writes land in its container's upper dir, which is already in overlay's own diff
form: a deleted name is a 0:0 character device and a directory that hides everything below it
carries `trusted.overlay.opaque=y`. The layer tar says the same in OCI terms (`.wh.NAME` and
`.wh..wh..opq`). The tar is streamed once: hashed uncompressed (the diff ID), gzip'd with zlib-ng,
hashed again (the blob digest) and written into the content store's ingest dir. The walk's
syscalls (lstat, xattrs, small files' bytes) run in a few threads ahead of the tar, which stays
in one thread and in a fixed order, so the same upper dir always makes the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import queue
import stat
import tarfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zlib_ng import zlib_ng

from runtime.images.applier import OPAQUE, WHITEOUT_PREFIX
from runtime.images.content import ContentStore

MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LEVEL = 1  # zlib-ng level 1: ~3x level 6's speed for ~10% more bytes on typical layers
PROBE_BYTES = 4 << 20  # a layer's first bytes, buffered to pick its level (see _GzipSink)
PROBE_SLICE, PROBE_SLICES = 32 << 10, 8
LOAD_THREADS = 2  # entries' syscalls done ahead of the tar (see _load)
LOAD_BATCH = 256  # entries loaded ahead at most
READ_AHEAD = 256 << 10  # files up to this size are read ahead whole
SINK_CHUNK = 1 << 20  # tar bytes hashed and compressed at a time
_KEEP_XATTRS = ("user.", "security.capability")
_REFUSED_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


class LayerDiffError(Exception):
    """The upper dir holds something an OCI layer cannot say."""


@dataclass(frozen=True)
class Layer:
    """A stored layer blob and what its manifest and config entries need."""

    digest: str
    size: int
    diff_id: str
    media_type: str = MT_DOCKER_LAYER


class _GzipSink:
    """File-like for tarfile: hash, compress, hash again, write.

    The level is picked once per layer from its first PROBE_BYTES: when slices of them shrink
    by less than a tenth at level 1, the layer is taken for incompressible (random, media,
    already compressed data) and stored at level 0, a valid gzip stream that every client reads,
    written at memory speed instead of level 1's ~80 MB/s per core, and smaller too (deflate
    grows incompressible data by ~5%). The hashing, compressing and writing run in a thread of
    their own, fed in order through a short queue, while the caller's thread builds the tar:
    they let go of the GIL, so the two overlap."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = hashlib.sha256()
        self.raw_size = 0
        self.comp = hashlib.sha256()
        self.size = 0
        self.pending = bytearray()  # written, not yet hashed or compressed
        self.head: list[bytes] = []  # the tar's first bytes, until the level is picked
        self.head_size = 0
        self.z: Any = None
        self.level = GZIP_LEVEL
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self.failed: BaseException | None = None
        self.worker = threading.Thread(target=self._work, name="layer-sink", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.failed is None:  # after a failure: drained, so the tar side never blocks
                try:
                    self._take(data)
                except BaseException as e:  # handed to the tar side at its next write
                    self.failed = e

    def stop(self) -> None:
        """End the worker, whatever happened (idempotent)."""
        if self.worker.is_alive():
            self.queue.put(None)
            self.worker.join()

    def _out(self, data: bytes) -> None:
        if data:
            self.comp.update(data)
            self.size += len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]

    def tell(self) -> int:
        return self.raw_size

    def write(self, data: bytes) -> int:
        """Gathered into SINK_CHUNK pieces first: a tar writes a header, a file's bytes and
        its padding as separate small writes, and each hash, compress and write call costs
        the same whatever its size."""
        self.pending += data
        self.raw_size += len(data)
        if len(self.pending) >= SINK_CHUNK:
            self._hand()
        return len(data)

    def _hand(self) -> None:
        if self.failed is not None:
            raise self.failed
        self.queue.put(bytes(self.pending))
        self.pending.clear()

    def _take(self, data: bytes) -> None:
        self.raw.update(data)
        if self.z is not None:
            self._out(self.z.compress(data))
            return
        self.head.append(data)
        self.head_size += len(data)
        if self.head_size >= PROBE_BYTES:
            self._start()

    def _start(self) -> None:
        head = b"".join(self.head)
        self.head, self.head_size = [], 0
        self.level = pick_level(head)
        self.z = zlib_ng.compressobj(self.level, zlib_ng.DEFLATED, 31)
        self._out(self.z.compress(head))

    def finish(self) -> None:
        """Everything written, hashed and compressed (the worker is done after this)."""
        self._hand()
        self.stop()
        if self.failed is not None:
            raise self.failed
        if self.z is None:
            self._start()
        self._out(self.z.flush())


def pick_level(head: bytes) -> int:
    """GZIP_LEVEL, or 0 when PROBE_SLICES spread over head barely compress."""
    if len(head) < PROBE_SLICE * PROBE_SLICES:
        return GZIP_LEVEL
    step = len(head) // PROBE_SLICES
    sample = [head[i * step: i * step + PROBE_SLICE] for i in range(PROBE_SLICES)]
    packed = sum(len(zlib_ng.compress(s, GZIP_LEVEL)) for s in sample)
    return 0 if packed > 0.9 * PROBE_SLICE * PROBE_SLICES else GZIP_LEVEL


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith(_REFUSED_XATTRS):
            raise LayerDiffError(f"{path}: overlay {name} is set (redirect_dir/metacopy must be "
                                 "off for build layers)")
        if name.startswith(_KEEP_XATTRS):
            value = os.getxattr(path, name, follow_symlinks=False)
            out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


@dataclass
class _Loaded:
    """One upper-dir entry with everything the tar needs from the filesystem."""

    rel: str
    st: os.stat_result
    pax: dict[str, str]
    opaque: bool = False
    linkname: str = ""
    data: bytes | None = None  # a small regular file's bytes, read ahead


def _load(upper: str, rel: str) -> _Loaded:
    """The syscalls for one entry (lstat, xattrs, a small file's bytes): done by LOAD_THREADS
    threads ahead of the tar, since they let go of the GIL."""
    path = os.path.join(upper, rel)
    st = os.lstat(path)
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        return _Loaded(rel, st, {})  # a whiteout: nothing more to read
    out = _Loaded(rel, st, _xattrs(path))
    if stat.S_ISDIR(mode):
        with contextlib.suppress(OSError):
            out.opaque = os.getxattr(path, "trusted.overlay.opaque",
                                     follow_symlinks=False) == b"y"
    elif stat.S_ISLNK(mode):
        out.linkname = os.readlink(path)
    elif stat.S_ISREG(mode) and st.st_size <= READ_AHEAD and st.st_nlink == 1:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            out.data = os.read(fd, st.st_size + 1)
        finally:
            os.close(fd)
    return out


def _names(upper: str, rel: str) -> Iterator[str]:
    """Every entry under rel in tar order: names sorted, a dir before what it holds."""
    with os.scandir(os.path.join(upper, rel) if rel else upper) as it:
        entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    for name, is_dir in entries:
        sub = f"{rel}/{name}" if rel else name
        yield sub
        if is_dir:
            yield from _names(upper, sub)


class _Writer:
    def __init__(self, upper: str, tf: tarfile.TarFile) -> None:
        self.upper, self.tf = upper, tf
        self.links: dict[tuple[int, int], str] = {}

    def _info(self, e: _Loaded) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(e.rel)
        ti.mode = stat.S_IMODE(e.st.st_mode)
        ti.uid, ti.gid = e.st.st_uid, e.st.st_gid
        ti.mtime = int(e.st.st_mtime)
        ti.pax_headers = e.pax
        return ti

    def walk(self) -> None:
        names = _names(self.upper, "")
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            while batch := list(itertools.islice(names, LOAD_BATCH)):
                for e in pool.map(lambda rel: _load(self.upper, rel), batch):
                    self.entry(e)

    def entry(self, e: _Loaded) -> None:
        rel, st = e.rel, e.st
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            parent, _, name = rel.rpartition("/")
            ti = tarfile.TarInfo(f"{parent}/{WHITEOUT_PREFIX}{name}" if parent
                                 else WHITEOUT_PREFIX + name)
            ti.mtime = int(st.st_mtime)
            self.tf.addfile(ti)
            return
        ti = self._info(e)
        if stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            self.tf.addfile(ti)
            if e.opaque:
                wh = tarfile.TarInfo(f"{rel}/{OPAQUE}")
                wh.mtime = ti.mtime
                self.tf.addfile(wh)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ti.type, ti.linkname = tarfile.LNKTYPE, self.links[key]
                self.tf.addfile(ti)
                return
            self.links[key] = rel
            if e.data is not None and len(e.data) == st.st_size:
                ti.size = st.st_size
                self.tf.addfile(ti, io.BytesIO(e.data))
                return
            with open(os.path.join(self.upper, rel), "rb") as f:
                ti.size = os.fstat(f.fileno()).st_size
                self.tf.addfile(ti, f)
        elif stat.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, e.linkname
            self.tf.addfile(ti)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tf.addfile(ti)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
            self.tf.addfile(ti)
        # sockets have no tar form: like Docker, they are left out


def write_layer(upper: str | Path, content: ContentStore) -> Layer:
    """Tar, compress and store the diff in upper; blocking (run it in a thread)."""
    tmp = content.ingest_dir / f".tmp-layer-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        sink = _GzipSink(fd)
        try:
            tf = tarfile.TarFile(fileobj=sink, mode="w",  # type: ignore[arg-type]
                                 format=tarfile.PAX_FORMAT, copybufsize=1 << 20)
            _Writer(str(upper), tf).walk()
            tf.close()
            sink.finish()
            os.fsync(fd)
        finally:
            sink.stop()  # before the fd it writes to goes
            os.close(fd)
        digest = "sha256:" + sink.comp.hexdigest()
        os.rename(tmp, content.path(digest))
    finally:
        if tmp.exists():
            tmp.unlink()
    return Layer(digest, sink.size, "sha256:" + sink.raw.hexdigest())
