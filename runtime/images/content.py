"""Content-addressed blob store: nothing becomes visible before its digest and size check."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.images.reference import validate_digest

_BATCH = 1 << 20
_LINGER = 0.02

# opener(offset) -> (offset the server actually starts at, chunks from there)
Opener = Callable[[int], Awaitable[tuple[int, AsyncIterator[bytes]]]]


class DigestMismatch(Exception):
    """Downloaded bytes do not hash to the digest the manifest promised."""


class Retryable(Exception):
    """A transient transfer failure: the fetch loop resumes with a Range request."""


class DownloadFailed(Exception):
    """What a follower of a failed or abandoned download sees."""


class ProgressTimeout(Retryable):
    """No byte arrived for the progress timeout."""


@dataclass
class Ingest:
    """One in-flight (or finished) blob download that several readers may follow."""

    digest: str
    size: int
    path: Path
    written: int = 0
    finished: bool = False
    error: BaseException | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    task: asyncio.Task[Path] | None = None
    hasher: Any = None
    users: int = 1
    final: Path = Path()

    def _advance(self, written: int, finished: bool = False,
                 error: BaseException | None = None) -> None:
        with self.cond:
            self.written, self.finished, self.error = written, finished or self.finished, error
            self.cond.notify_all()

    async def wait(self) -> Path:
        """Path of the verified blob; raises what the download raised."""
        assert self.task is not None
        return await asyncio.shield(self.task)

    def reader(self) -> FollowReader:
        """A blocking reader (for a worker thread) that tails the download as it grows."""
        with self.cond:
            try:
                return FollowReader(self, os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                # another process finished this blob before we even took the ingest lock
                return FollowReader(self, os.open(self.final, os.O_RDONLY | os.O_CLOEXEC))


class FollowReader:
    """File-like view of a growing ingest file; EOF only once the download finished."""

    def __init__(self, ing: Ingest, fd: int) -> None:
        self.ing, self.fd, self.pos = ing, fd, 0
        self.aborted = False

    def read(self, n: int = -1) -> bytes:
        ing = self.ing
        with ing.cond:
            # all declared bytes are in: EOF without waiting for the digest check and fsync
            while self.pos >= ing.written and not ing.finished and not self.aborted \
                    and not 0 <= ing.size <= ing.written:
                ing.cond.wait(1.0)
            if self.aborted:
                raise DownloadFailed(f"reading {ing.digest}: aborted")
            if ing.error is not None:
                raise DownloadFailed(f"download of {ing.digest} failed: {ing.error}")
            avail = ing.written - self.pos
        if avail <= 0:
            return b""
        data = os.pread(self.fd, avail if n < 0 else min(n, avail), self.pos)
        self.pos += len(data)
        return data

    def abort(self) -> None:
        """Make the reading thread give up at its next read."""
        with self.ing.cond:
            self.aborted = True
            self.ing.cond.notify_all()

    def close(self) -> None:
        os.close(self.fd)


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
        self.stale_after = stale_after
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)
        self._active: dict[str, Ingest] = {}

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
        """Bytes and inodes used by blobs and ingests."""
        size = inodes = 0
        for d in (self.blobs, self.ingest_dir):
            for p in d.iterdir():
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

    def fetch(self, digest: str, size: int, opener: Opener, progress_timeout: float = 300,
              retries: int = 5, limit: asyncio.Semaphore | None = None) -> Ingest:
        """Start (or join) the one download of digest in this process."""
        if digest in self._active:
            self._active[digest].users += 1
            return self._active[digest]
        final = self.path(digest)
        if final.is_file():
            ing = Ingest(digest, size, final, written=final.stat().st_size, finished=True)
            ing.task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
            ing.task.set_result(final)  # type: ignore[union-attr]
            return ing
        ing = Ingest(digest, size, self.ingest_dir / _hex(digest), final=final)
        ing.path.touch()
        self._active[digest] = ing
        ing.task = asyncio.create_task(
            self._limited(ing, opener, progress_timeout, retries, limit))
        ing.task.add_done_callback(lambda _t: self._active.pop(digest, None))
        return ing

    async def release(self, ing: Ingest) -> None:
        """A puller is done with ing; the last one to give up cancels an unfinished download."""
        ing.users -= 1
        if ing.users <= 0 and ing.task is not None and not ing.task.done():
            ing.task.cancel()
            with contextlib.suppress(BaseException):
                await ing.task

    async def _limited(self, ing: Ingest, opener: Opener, timeout: float, retries: int,
                       limit: asyncio.Semaphore | None) -> Path:
        try:
            if limit is None:
                return await self._run(ing, opener, timeout, retries)
            async with limit:
                return await self._run(ing, opener, timeout, retries)
        except BaseException as e:  # also a cancel while queued: followers must not wait forever
            ing._advance(ing.written, finished=True, error=e)
            raise

    async def _run(self, ing: Ingest, opener: Opener, timeout: float, retries: int) -> Path:
        fd = await self._open_locked(ing.path)
        try:
            if self.has(ing.digest):  # another process finished it while we waited
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ing.path)
                with ing.cond:
                    ing.path = self.path(ing.digest)
                ing._advance(ing.path.stat().st_size, finished=True)
                return ing.path
            ing.hasher = await asyncio.to_thread(_hash_prefix, fd)
            ing._advance(os.fstat(fd).st_size)
            attempt = 0
            while True:
                try:
                    if ing.size < 0 or ing.written < ing.size:
                        await self._transfer(ing, fd, opener, timeout)
                    break
                except Retryable:
                    attempt += 1
                    if attempt > retries:
                        raise
                    await asyncio.sleep(min(0.2 * 2**attempt, 5))
            got, written = "sha256:" + ing.hasher.hexdigest(), ing.written
            if got != ing.digest or (ing.size >= 0 and written != ing.size):
                os.unlink(ing.path)
                raise DigestMismatch(
                    f"blob {ing.digest}: got {got} ({written} bytes, expected {ing.size})")
            await asyncio.to_thread(os.fsync, fd)
            with ing.cond:  # readers open ing.path under this lock, so it never dangles
                os.rename(ing.path, self.path(ing.digest))
                ing.path = self.path(ing.digest)
            ing._advance(written, finished=True)
            return ing.path
        finally:
            os.close(fd)

    async def _open_locked(self, path: Path) -> int:
        """Cross-process exclusion per digest (a kill -9 releases it with the fd)."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            try:  # the holder may have renamed or deleted the file meanwhile
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    async def _transfer(self, ing: Ingest, fd: int, opener: Opener, timeout: float) -> None:
        written = ing.written
        try:
            start, chunks = await asyncio.wait_for(opener(written), timeout)
        except TimeoutError:
            raise ProgressTimeout(f"no response for {timeout}s fetching {ing.digest}") from None
        if start != written:  # server ignored Range: start over
            os.ftruncate(fd, 0)
            written, ing.hasher = 0, hashlib.sha256()
            ing._advance(0)
        try:
            await self._copy_chunks(ing, fd, chunks, written, timeout)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # release the HTTP connection now, not at garbage collection
                with contextlib.suppress(Exception):
                    await aclose()

    async def _copy_chunks(self, ing: Ingest, fd: int, chunks: AsyncIterator[bytes],
                           written: int, timeout: float) -> None:
        """Received chunks are gathered to ~1 MiB (or 20 ms); a worker thread writes and hashes
        each batch while the loop receives the next, so blob bytes never wait on the loop."""
        loop = asyncio.get_running_loop()
        it = chunks.__aiter__()
        buf: list[bytes] = []
        nbuf = 0
        pending: asyncio.Future[None] | None = None
        flushed = loop.time()
        try:
            async with asyncio.timeout(timeout) as deadline:
                while True:
                    try:
                        chunk = await it.__anext__()
                    except StopAsyncIteration:
                        return
                    deadline.reschedule(loop.time() + timeout)
                    if ing.size >= 0 and written + nbuf + len(chunk) > ing.size:
                        buf, nbuf = [], 0
                        if pending is not None:
                            await pending
                        os.unlink(ing.path)
                        raise DigestMismatch(
                            f"blob {ing.digest}: more than the {ing.size} bytes declared")
                    buf.append(chunk)
                    nbuf += len(chunk)
                    now = loop.time()
                    if nbuf >= _BATCH or now - flushed >= _LINGER:  # a slow stream still streams
                        flushed = now
                        if pending is not None:
                            await pending
                        pending = loop.run_in_executor(
                            None, _write_batch, ing, os.dup(fd), b"".join(buf), written)
                        written, buf, nbuf = written + nbuf, [], 0
        except TimeoutError:
            raise ProgressTimeout(f"no byte for {timeout}s fetching {ing.digest}") from None
        finally:  # what arrived is kept, so a retry resumes after it
            if pending is not None:
                try:
                    await pending
                except BaseException:
                    buf = []
                    raise
            if buf:
                _write_batch(ing, os.dup(fd), b"".join(buf), written)


def _write_batch(ing: Ingest, fd: int, data: bytes, at: int) -> None:
    """Write and hash one batch, then let followers read it; fd is a dup this call closes,
    so a write the loop stopped waiting for can never land in a reused descriptor."""
    try:
        view = memoryview(data)
        pos = at
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
    finally:
        os.close(fd)
    ing.hasher.update(data)
    ing._advance(pos)


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


def _hash_prefix(fd: int) -> hashlib._Hash:
    """Re-hash what an interrupted download already wrote, so it can resume."""
    h = hashlib.sha256()
    pos = 0
    while chunk := os.pread(fd, 1 << 20, pos):
        h.update(chunk)
        pos += len(chunk)
    return h
