"""One blob read straight off the wire: hashed, kept in its ingest file and resumed as it goes.

Two threads per layer: the blob's own fetch thread receives, hashes and keeps (recv, sha256,
pwrite) up to _AHEAD chunks ahead of the unpack thread that reads it (inflate, sha256 of the tar,
file writes). A big layer's two halves then run on both cores at once instead of one after the
other per chunk (measured on a 320 MiB layer of the model bench image: each half is about half of
the layer's time, most of it the kernel copying into the page cache); every heavy part runs
outside the GIL.

A chunk is one of the pull's 1 MiB buffers (Buffers), filled by the receives that come before the
reader asks for it, hashed and written once, and handed back once the reader copied it out. So no
receive makes a bytes object (read1 made a fresh 1 MiB one for each, about 130 per pull of the
`big` bench image, and faulting their pages in was a quarter of the pull's page faults)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable

from runtime.images.content import ContentStore, DigestMismatch, DownloadFailed, Retryable
from runtime.images.registry import ReadInto, SyncOpener

_CHUNK = 1 << 20
_AHEAD = 8  # chunks fetched ahead of the reader: 8 MiB of memory per layer stream at most


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


class Buffers:
    """The 1 MiB buffers a pull's layers receive and inflate into, handed on from layer to layer:
    a pull of ten layers faults in fresh pages for the few streaming at once, not for all ten.
    The store drops them with its unpack pool when its last pull ends: an idle daemon keeps none."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(_CHUNK)

    def give(self, bufs: list[bytearray]) -> None:
        with self._lock:
            self._free.extend(bufs)


class _Ahead:
    """The bounded hand-over from the fetch thread to the reader: chunks (views of buffers),
    then an empty one at the end or the exception that ended the fetch (kept, so every later
    read raises it too); and back, the buffers the reader is done with."""

    def __init__(self, buffers: Buffers) -> None:
        self.items: deque[memoryview | BaseException] = deque()
        self.buffers = buffers
        self.owned: list[bytearray] = []  # taken from buffers: at most _AHEAD + 2
        self.free: list[bytearray] = []  # of those, the ones to receive into again
        self.cond = threading.Condition()
        self.stopped = False  # the reader went away: the fetch thread stops at its next put
        self.waiting = False  # the reader waits for a chunk: hand over what is received
        self.end: memoryview | BaseException | None = None  # what the last item was, once taken

    def buffer(self) -> bytearray:
        """A buffer for the fetch thread: one handed back, else a new one (the reader holds
        at most one and at most _AHEAD are queued, so no wait is needed here)."""
        with self.cond:
            if self.free:
                return self.free.pop()
        buf = self.buffers.take()
        self.owned.append(buf)
        return buf

    def release(self) -> None:
        """Give every buffer back to the pull's; only once the fetch thread stopped using them
        (it queued the end, or was joined) and the reader is done with them."""
        with self.cond:
            owned, self.owned, self.free = self.owned, [], []
        self.buffers.give(owned)

    def put(self, item: memoryview | BaseException) -> bool:
        """Queue an item, waiting while _AHEAD are queued; False once the reader stopped."""
        with self.cond:
            while len(self.items) >= _AHEAD and not self.stopped:
                self.cond.wait()
            if self.stopped:
                return False
            self.items.append(item)
            self.cond.notify_all()
            return True

    def take(self, done: memoryview | None) -> memoryview:
        """The next chunk (empty at the end), handing back the one the reader finished."""
        with self.cond:
            if done is not None and isinstance(done.obj, bytearray):
                self.free.append(done.obj)
            if self.end is None:
                while not self.items:
                    self.waiting = True
                    self.cond.wait()
                self.waiting = False
                item = self.items.popleft()
                self.cond.notify_all()
                if isinstance(item, memoryview) and item:
                    return item
                self.end = item
        if isinstance(self.end, BaseException):
            raise self.end
        return memoryview(b"")

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.items.clear()
            self.cond.notify_all()


class BlobStream:
    """Readable over one blob: a partial download kept by an earlier process is re-read first,
    the rest comes from the registry, resuming with Range after a transient failure."""

    def __init__(self, store: ContentStore, digest: str, size: int, opener: SyncOpener,
                 retries: int, cancel: Abandon, buffers: Buffers | None = None) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.opener, self.retries, self.cancel = opener, retries, cancel
        self.h = hashlib.sha256()  # the fetch thread's, complete once it queued the end
        self.pos = 0  # bytes handed to the reader
        self._got = 0  # bytes fetched, hashed and kept by the fetch thread
        self._ahead = _Ahead(buffers or Buffers())
        self._thread: threading.Thread | None = None
        self._buf = memoryview(b"")  # what is left of the chunk being read
        self._chunk: memoryview | None = None  # that chunk, handed back with the next take
        self._readinto: ReadInto | None = None
        self._close: Callable[[], None] | None = None
        self._cut: Callable[[], None] | None = None
        fd = store.open_ingest(digest, cancel)
        self.done = fd is None  # another process published it while we waited for its lock
        self.fd = os.open(store.path(digest), os.O_RDONLY | os.O_CLOEXEC) if fd is None else fd
        self.kept = os.fstat(self.fd).st_size  # bytes already on disk: re-read, not re-fetched
        self.progress: Callable[[int], None] = lambda _pos: None  # bytes read so far

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (a chunk when n < 0), copied; b'' only at the end of the blob."""
        if not self._buf:
            self._buf = self._take()
        take = len(self._buf) if n < 0 else min(n, len(self._buf))
        out, self._buf = self._buf[:take], self._buf[take:]
        self.pos += take
        return out.tobytes()

    def readinto(self, b: memoryview) -> int:
        """Up to len(b) bytes copied into b; 0 only at the end of the blob (how gzip_ng's reader
        fills its input buffer)."""
        if not self._buf:
            self._buf = self._take()
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        self.pos += n
        return n

    def follow(self, fd: int) -> None:
        """For an unpack worker reading the blob's file itself: write to fd (its pipe) the
        length kept so far each time the fetch thread has written another chunk, up to the end.
        """
        while True:
            self.pos += len(self._buf)
            self._buf = self._take()
            if not self._buf:
                return
            os.write(fd, (self.pos + len(self._buf)).to_bytes(8, "little"))

    def start(self) -> None:
        """Start the fetch thread, if the first read has not: a layer waiting for its turn to
        unpack keeps downloading meanwhile."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch_ahead, daemon=True,
                                            name=f"fetch-{self.digest[7:19]}")
            self._thread.start()

    def _take(self) -> memoryview:
        """The next chunk from the fetch thread."""
        self.start()
        self._chunk = self._ahead.take(self._chunk)
        return self._chunk

    def _fetch_ahead(self) -> None:
        """The fetch thread: chunks until the end (empty) or the error that stopped it."""
        try:
            while True:
                chunk = self._next()
                if not self._ahead.put(chunk) or not chunk:
                    return
        except BaseException as e:  # handed to the reader, raised there
            self._ahead.put(e)

    def _next(self) -> memoryview:
        """The next chunk, hashed and kept; empty at the end. Receives go into one buffer until
        it is full or the reader waits for it (a reader that keeps up gets each receive at once,
        a busy one a MiB in one hand-over), then one hash update and one write take all of it."""
        if self._got < self.kept:  # bytes an earlier process kept: re-read, not re-fetched
            buf = memoryview(self._ahead.buffer())
            n = os.preadv(self.fd, [buf[: self.kept - self._got]], self._got)
            self.h.update(buf[:n])
            self._got += n
            self.progress(self._got)
            return buf[:n]
        if self.done or 0 <= self.size <= self._got:  # all there (a whole blob kept unpublished)
            return memoryview(b"")
        buf = memoryview(self._ahead.buffer())
        filled = 0
        while filled < len(buf) and not (filled and self._ahead.waiting):
            n = self._fetch(buf[filled:], self._got + filled)
            filled += n
            if not n or 0 <= self.size <= self._got + filled:
                break
        if 0 <= self.size < self._got + filled:
            raise self._mismatch(f"more than the {self.size} bytes declared")
        chunk = buf[:filled]
        self.h.update(chunk)
        view, at = chunk, self._got
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n
        self._got = at
        self.progress(at)
        return chunk

    def _fetch(self, buf: memoryview, at: int) -> int:
        """One receive from the registry into buf, of the blob's bytes from at on; a transient
        failure resumes there."""
        attempt = 0
        while True:
            if self.cancel.is_set() or self._ahead.stopped:
                raise DownloadFailed(f"download of {self.digest} was abandoned")
            try:
                if self._readinto is None:
                    start, self._readinto, self._close, self._cut = self.opener(at)
                    self.cancel.watch(self._cut)
                    skip = at - start  # a server that ignores Range starts over
                    while skip > 0:
                        n = self._readinto(buf)
                        if not n:
                            raise Retryable(f"blob {self.digest} ended before byte {at}")
                        if n > skip:
                            buf[: n - skip] = buf[skip:n]
                            return n - skip
                        skip -= n
                n = self._readinto(buf)
                if n or self.size < 0 or at >= self.size:
                    return n
                raise Retryable(f"blob {self.digest} ended at byte {at} of {self.size}")
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
        while True:  # the rest only needs hashing, which the fetch thread does
            self.pos += len(self._buf)
            self._buf = self._take()
            if not self._buf:
                break
        self._ahead.release()  # the fetch thread queued the end: it is done with them
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
        self._readinto = self._close = self._cut = None

    def close(self) -> None:
        """Stop the fetch thread, then release the connection and the file (and with it the
        download lock)."""
        if self._thread is not None:
            self._ahead.stop()
            if self._cut is not None:
                self._cut()  # a recv blocked on a stalled registry returns now
            self._thread.join()
            self._thread = None
            self._ahead.release()
        self.close_connection()
        os.close(self.fd)
