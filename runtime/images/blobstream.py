"""One blob read straight off the wire: hashed, kept in its ingest file and resumed as it goes.

The unpack thread pulls layer bytes through this reader, so receive, hash, keep and unpack of a
layer are one loop in one thread, and the heavy parts of it (recv, sha256, zlib, write) run
outside the GIL, on every core.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator

from runtime.images.content import ContentStore, DigestMismatch, DownloadFailed, Retryable
from runtime.images.registry import SyncOpener

_CHUNK = 1 << 20


class Abandon:
    """A pull's cancel flag for its threads; setting it also cuts connections blocked in a read."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._cuts: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to timeout; True (at once) when the pull was abandoned."""
        return self.event.wait(timeout)

    def set(self) -> None:
        self.event.set()
        with self._lock:
            cuts = list(self._cuts)
        for cut in cuts:
            cut()

    def watch(self, cut: Callable[[], None]) -> None:
        """Cut this connection if the pull is abandoned while it is open."""
        with self._lock:
            self._cuts.add(cut)
        if self.event.is_set():
            cut()

    def forget(self, cut: Callable[[], None]) -> None:
        """The connection is closed: nothing to cut any more."""
        with self._lock:
            self._cuts.discard(cut)


class BlobStream:
    """Readable over one blob: a partial download kept by an earlier process is re-read first,
    the rest comes from the registry, resuming with Range after a transient failure."""

    def __init__(self, store: ContentStore, digest: str, size: int, opener: SyncOpener,
                 retries: int, cancel: Abandon) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.opener, self.retries, self.cancel = opener, retries, cancel
        self.h = hashlib.sha256()
        self.pos = 0  # bytes handed to the reader (and hashed)
        self._buf = memoryview(b"")
        self._chunks: Iterator[bytes] | None = None
        self._close: Callable[[], None] | None = None
        self._cut: Callable[[], None] | None = None
        fd = store.open_ingest(digest, cancel)
        self.done = fd is None  # another process published it while we waited for its lock
        self.fd = os.open(store.path(digest), os.O_RDONLY | os.O_CLOEXEC) if fd is None else fd
        self.kept = os.fstat(self.fd).st_size  # bytes already on disk: re-read, not re-fetched
        self.progress: Callable[[int], None] = lambda _pos: None  # bytes read so far

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (a chunk when n < 0); b'' only at the end of the blob."""
        if not self._buf:
            chunk = self._next()
            if n < 0 or len(chunk) <= n:  # the common case: hand the chunk over uncopied
                self.pos += len(chunk)
                return chunk
            self._buf = memoryview(chunk)
        take = len(self._buf) if n < 0 else min(n, len(self._buf))
        out, self._buf = self._buf[:take], self._buf[take:]
        self.pos += take
        return out.tobytes()

    def _next(self) -> bytes:
        if self.pos < self.kept:
            data = os.pread(self.fd, min(_CHUNK, self.kept - self.pos), self.pos)
            self.h.update(data)
            self.progress(self.pos + len(data))
            return data
        if self.done or 0 <= self.size <= self.pos:  # all there (a whole blob kept unpublished)
            return b""
        chunk = self._fetch()
        if 0 <= self.size < self.pos + len(chunk):
            raise self._mismatch(f"more than the {self.size} bytes declared")
        self.h.update(chunk)
        view = memoryview(chunk)
        at = self.pos
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n
        self.progress(self.pos + len(chunk))
        return chunk

    def _fetch(self) -> bytes:
        """The next chunk from the registry; a transient failure resumes where it stopped."""
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise DownloadFailed(f"download of {self.digest} was abandoned")
            try:
                if self._chunks is None:
                    start, self._chunks, self._close, self._cut = self.opener(self.pos)
                    self.cancel.watch(self._cut)
                    skip = self.pos - start  # a server that ignores Range starts over
                    while skip > 0:
                        data = next(self._chunks, b"")
                        if not data:
                            raise Retryable(f"blob {self.digest} ended before byte {self.pos}")
                        if len(data) > skip:
                            return data[skip:]
                        skip -= len(data)
                chunk = next(self._chunks, b"")
                if chunk or self.size < 0 or self.pos >= self.size:
                    return chunk
                raise Retryable(f"blob {self.digest} ended at byte {self.pos} of {self.size}")
            except Retryable:
                self.close_connection()
                attempt += 1
                if attempt > self.retries:
                    raise
                self.cancel.wait(min(0.2 * 2**attempt, 5))

    def _mismatch(self, why: str) -> DigestMismatch:
        self.store.drop_ingest(self.digest)
        return DigestMismatch(f"blob {self.digest}: {why}")

    def finish(self) -> None:
        """Read what the reader left, then check digest and size (publish() makes it a blob)."""
        while self.read(_CHUNK):
            pass
        got = "sha256:" + self.h.hexdigest()
        if got != self.digest or (self.size >= 0 and self.pos != self.size):
            if self.done:
                raise DigestMismatch(f"stored blob {self.digest} hashes to {got}")
            raise self._mismatch(f"got {got} ({self.pos} bytes, expected {self.size})")
        self.close_connection()

    def publish(self, flushed: bool) -> None:
        """Rename the verified file into the store; flushed: a syncfs since finish() covered it."""
        if not self.done:
            self.store.publish(self.digest, self.fd, flushed)
            self.done = True

    def close_connection(self) -> None:
        """Give the HTTP connection back now, not at garbage collection."""
        if self._cut is not None:
            self.cancel.forget(self._cut)
        if self._close is not None:
            self._close()
        self._chunks = self._close = self._cut = None

    def close(self) -> None:
        """Release the connection and the file (and with it the download lock)."""
        self.close_connection()
        os.close(self.fd)
