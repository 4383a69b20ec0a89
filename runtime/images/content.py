"""Content-addressed blob store: nothing becomes visible before its digest and size check."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from runtime.images.reference import validate_digest


class Cancelled(Protocol):
    """What a blocked wait checks to give up early (a pull's Abandon flag)."""

    def wait(self, timeout: float) -> bool: ...


class DigestMismatch(Exception):
    """Downloaded bytes do not hash to the digest the manifest promised."""


class Retryable(Exception):
    """A transient transfer failure: the fetch loop resumes with a Range request."""


class DownloadFailed(Exception):
    """A download that was abandoned (the pull was cancelled)."""


class ProgressTimeout(Retryable):
    """No byte arrived for the progress timeout."""


def _hex(digest: str) -> str:
    algo, _, h = validate_digest(digest).partition(":")
    if algo != "sha256":
        raise ValueError(f"unsupported digest algorithm in {digest!r}")
    return h


class ContentStore:
    """Blobs live at blobs/sha256/<hex>; partial downloads at ingest/<hex> (resumable)."""

    def __init__(self, root: Path, stale_after: float = 24 * 3600) -> None:
        self.blobs = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self._blob_blocks: dict[str, int] = {}  # blob name -> st_blocks, for usage()
        self.stale_after = stale_after
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the verified blob lives (it may not exist)."""
        return self.blobs / _hex(digest)

    def has(self, digest: str) -> bool:
        """Whether a verified blob is present."""
        return self.path(digest).is_file()

    def read_bytes(self, digest: str) -> bytes:
        """Small blobs (manifests, configs) in memory."""
        return self.path(digest).read_bytes()

    def put_bytes(self, digest: str, data: bytes) -> Path:
        """Verify then publish an in-memory blob atomically."""
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise DigestMismatch(f"content {got} does not match expected {digest}")
        dst = self.path(digest)
        if not dst.exists():
            tmp = self.ingest_dir / f".tmp-{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            os.rename(tmp, dst)
        return dst

    def put_stream(self, src: Any, expect: str | None = None) -> tuple[str, int]:
        """Copy a local stream in, hashing as it goes; publish under the digest it has."""
        tmp = self.ingest_dir / f".tmp-{uuid.uuid4().hex}"
        h, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            digest = "sha256:" + h.hexdigest()
            if expect is not None and expect != digest:
                raise DigestMismatch(f"content {digest} does not match expected {expect}")
            os.rename(tmp, self.path(digest))
            return digest, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def list(self) -> set[str]:
        """Digests of all verified blobs."""
        return {"sha256:" + p.name for p in self.blobs.iterdir()}

    def delete(self, digest: str) -> None:
        """Remove one blob (GC decides which)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def usage(self) -> tuple[int, int]:
        """Bytes and inodes used by blobs and ingests. A blob never changes once published, so
        each is stat'ed once: a call costs two directory reads and a stat per ingest file."""
        size = inodes = 0
        names = set(os.listdir(self.blobs))
        self._blob_blocks = {n: b for n, b in self._blob_blocks.items() if n in names}
        for name in names:
            blocks = self._blob_blocks.get(name)
            if blocks is None:
                try:
                    blocks = self._blob_blocks[name] = os.stat(self.blobs / name).st_blocks
                except FileNotFoundError:
                    continue
            size, inodes = size + blocks * 512, inodes + 1
        for p in self.ingest_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                size += p.stat().st_blocks * 512
                inodes += 1
        return size, inodes

    def cleanup(self) -> None:
        """At start: drop partial files too old to resume, unless another process is writing."""
        now = time.time()
        for p in self.ingest_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                age = now - p.stat().st_mtime
                old = age > self.stale_after or (p.name.startswith(".tmp-") and age > 3600)
                if old and _unlocked(p):
                    p.unlink()

    def open_ingest(self, digest: str, cancel: Cancelled) -> int | None:
        """The digest's ingest file, locked against other processes (a kill -9 releases it with
        the fd); None when the blob got published meanwhile. What it holds is resumable."""
        path = self.ingest_dir / _hex(digest)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if cancel.wait(0.05):
                        os.close(fd)
                        raise DownloadFailed(f"download of {digest} was abandoned") from None
            try:  # the holder may have published or deleted the file meanwhile
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    if not self.has(digest):
                        return fd
                    os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)
            if self.has(digest):
                return None

    def publish(self, digest: str, fd: int, flushed: bool = False) -> Path:
        """Make a verified ingest file the blob: flushed first (unless a syncfs already did),
        then one rename."""
        if not flushed:
            os.fsync(fd)
        dst = self.path(digest)
        os.rename(self.ingest_dir / _hex(digest), dst)
        return dst

    def drop_ingest(self, digest: str) -> None:
        """Forget a download whose bytes proved wrong: a retry must not resume from them."""
        with contextlib.suppress(FileNotFoundError):
            (self.ingest_dir / _hex(digest)).unlink()


def _unlocked(p: Path) -> bool:
    """Whether no live process holds the download lock on p."""
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
