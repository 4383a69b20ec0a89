"""Content store and blob streams: verification before visibility, resume, abandon."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.images.blobstream import Abandon, BlobStream, Buffers
from runtime.images.content import ContentStore, DigestMismatch, DownloadFailed, Retryable

DATA = os.urandom(3 << 20)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Source:
    """A blocking opener serving DATA in chunks from an offset, optionally failing once."""

    def __init__(self, data: bytes = DATA, fail_at: int | None = None, stall: float = 0,
                 honour_range: bool = True) -> None:
        self.data, self.fail_at, self.stall, self.range = data, fail_at, stall, honour_range
        self.calls: list[int] = []
        self.cut = threading.Event()

    def __call__(self, offset: int):
        self.calls.append(offset)
        start = offset if self.range else 0

        pos = start

        def readinto(b: memoryview) -> int:  # short reads of 64 KiB, as a socket's may be
            nonlocal pos
            if pos >= len(self.data):
                return 0
            if self.fail_at is not None and pos >= self.fail_at:
                self.fail_at = None
                raise Retryable("connection reset")
            if self.stall and self.cut.wait(self.stall):
                raise Retryable("connection cut")
            n = min(len(b), 65536, len(self.data) - pos)
            b[:n] = self.data[pos : pos + n]
            pos += n
            return n

        return start, readinto, lambda: None, self.cut.set


def _get(store: ContentStore, digest: str, size: int, src: Source,
         abandon: Abandon | None = None, buffers: Buffers | None = None) -> bytes:
    bs = BlobStream(store, digest, size, src, 2, abandon or Abandon(), buffers)
    try:
        got = b"".join(iter(lambda: bs.read(100_000), b""))
        bs.finish()
        bs.publish(flushed=False)
        return got
    finally:
        bs.close()


def _visible(store: ContentStore) -> list[str]:
    return sorted(os.listdir(store.blobs)) + sorted(os.listdir(store.ingest_dir))


@pytest.mark.timeout(30)
def test_stream_verifies_and_publishes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert _get(store, DIGEST, len(DATA), Source()) == DATA
    assert store.path(DIGEST).read_bytes() == DATA
    assert store.list() == {DIGEST} and os.listdir(store.ingest_dir) == []


@pytest.mark.timeout(30)
def test_digest_mismatch_never_visible(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    bad = bytearray(DATA)
    bad[-1] ^= 0xFF
    with pytest.raises(DigestMismatch):
        _get(store, DIGEST, len(DATA), Source(bytes(bad)))
    with pytest.raises(DigestMismatch, match="more than"):
        _get(store, DIGEST, 100, Source())
    assert _visible(store) == []
    with pytest.raises(DigestMismatch):
        store.put_bytes(DIGEST, b"nope")


@pytest.mark.timeout(30)
def test_resume_with_range_after_interruption(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    src = Source(fail_at=1 << 20)
    assert _get(store, DIGEST, len(DATA), src) == DATA
    assert src.calls == [0, 1 << 20]
    # a partial file another process left is re-read, then a server ignoring Range starts over
    store.delete(DIGEST)
    (store.ingest_dir / DIGEST[7:]).write_bytes(DATA[:1000])
    src2 = Source(honour_range=False)
    assert _get(store, DIGEST, len(DATA), src2) == DATA
    assert src2.calls == [1000] and store.read_bytes(DIGEST) == DATA
    # a whole blob left unpublished (its pull failed later) is verified without a request
    store.delete(DIGEST)
    (store.ingest_dir / DIGEST[7:]).write_bytes(DATA)
    src3 = Source()
    assert _get(store, DIGEST, len(DATA), src3) == DATA
    assert src3.calls == []


@pytest.mark.timeout(30)
def test_abandon_cuts_a_stalled_read(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    abandon, src = Abandon(), Source(stall=60)
    threading.Timer(0.2, abandon.set).start()
    t0 = time.monotonic()
    with pytest.raises(DownloadFailed, match="abandoned"):
        _get(store, DIGEST, len(DATA), src, abandon)
    assert time.monotonic() - t0 < 5 and not store.has(DIGEST)


@pytest.mark.timeout(30)
def test_a_second_process_waits_then_reads_the_published_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    fd = store.open_ingest(DIGEST, Abandon())  # the other process holds the download
    assert fd is not None
    os.write(fd, DATA)

    def other_finishes() -> None:
        store.publish(DIGEST, fd)
        os.close(fd)

    threading.Timer(0.2, other_finishes).start()
    src = Source()
    assert _get(store, DIGEST, len(DATA), src) == DATA
    assert src.calls == []


def test_cleanup_removes_stale_partials(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, stale_after=60)
    old, fresh = store.ingest_dir / ("a" * 64), store.ingest_dir / ("b" * 64)
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 120, time.time() - 120))
    (store.ingest_dir / ".tmp-x").write_bytes(b"z")
    (store.ingest_dir / ".tmp-fresh").write_bytes(b"z")
    os.utime(store.ingest_dir / ".tmp-x", (time.time() - 7200, time.time() - 7200))
    locked = store.ingest_dir / ("c" * 64)
    locked.write_bytes(b"busy")
    os.utime(locked, (time.time() - 120, time.time() - 120))
    fd = os.open(locked, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process still downloading it
    try:
        store.cleanup()
    finally:
        os.close(fd)
    assert sorted(os.listdir(store.ingest_dir)) == [".tmp-fresh", "b" * 64, "c" * 64]


def test_startup_gc_drops_only_old_orphans(tmp_path: Path) -> None:
    from runtime.images.store import ImageStore

    store = ImageStore(tmp_path)
    old_blob, new_blob = b"old", b"new"
    d_old = "sha256:" + hashlib.sha256(old_blob).hexdigest()
    d_new = "sha256:" + hashlib.sha256(new_blob).hexdigest()
    store.content.put_bytes(d_old, old_blob)
    store.content.put_bytes(d_new, new_blob)
    c_old, c_new = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    store.snapshots.commit(store.snapshots.prepare(), c_old)
    store.snapshots.commit(store.snapshots.prepare(), c_new)
    past = time.time() - 2 * 24 * 3600
    os.utime(store.content.path(d_old), (past, past))
    os.utime(store.snapshots.fs(c_old).parent, (past, past))
    again = ImageStore(tmp_path)
    assert again.content.list() == {d_new} and again.snapshots.list() == {c_new}


@pytest.mark.timeout(30)
def test_streams_hand_their_buffers_on(tmp_path: Path) -> None:
    """A stream receives into the pull's buffers and gives them all back once verified, and the
    next layer's stream takes those first (each new one is a MiB of fresh pages): two streams
    together make no more than one may hold (_AHEAD queued, one being read, one filling)."""
    store, buffers = ContentStore(tmp_path), Buffers()
    made: list[bytearray] = []
    take = buffers.take

    def counted() -> bytearray:
        free = len(buffers._free)
        buf = take()
        if not free:
            made.append(buf)
        return buf

    buffers.take = counted  # type: ignore[method-assign]
    assert _get(store, DIGEST, len(DATA), Source(), buffers=buffers) == DATA
    first = len(made)
    assert 1 <= first <= 10 and len(buffers._free) == first  # _AHEAD + 2 at most, all back
    data = os.urandom(2 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert _get(store, digest, len(data), Source(data), buffers=buffers) == data
    assert len(made) <= 10 and len(buffers._free) == len(made)


def test_close_before_the_end_stops_the_fetch_thread(tmp_path: Path) -> None:
    """An unpack that fails early closes the stream: its fetch thread, blocked on the full
    hand-over or on a stalled read, ends before the file and the download lock are let go."""
    store = ContentStore(tmp_path)
    for src in (Source(), Source(stall=60)):
        bs = BlobStream(store, DIGEST, len(DATA), src, 2, Abandon())
        if not src.stall:
            assert bs.read(10) == DATA[:10]
        fetch = [t for t in threading.enumerate() if t.name == f"fetch-{DIGEST[7:19]}"]
        bs.close()
        assert all(not t.is_alive() for t in fetch)
        assert not store.has(DIGEST)


@pytest.mark.timeout(30)
def test_error_reaches_the_reader_at_every_read(tmp_path: Path) -> None:
    """The fetch thread's failure is raised in the reader, and again by finish()."""
    store = ContentStore(tmp_path)
    bs = BlobStream(store, DIGEST, len(DATA) - 1, Source(), 2, Abandon())
    try:
        with pytest.raises(DigestMismatch, match="more than"):
            while bs.read(1 << 20):
                pass
        with pytest.raises(DigestMismatch, match="more than"):
            bs.finish()
    finally:
        bs.close()
    assert not store.has(DIGEST)


@pytest.mark.parametrize("when", ["before", "after"])
def test_prepare_outlives_a_startup_cleanup_that_takes_its_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Another process's start-up cleanup may take a fresh `.tmp-` dir between prepare's mkdir
    and its lock: before prepare opens it (the open fails) or after (the locked dir has no
    links). Either way prepare makes another (CI once saw the first case fail a pull)."""
    from runtime.images.snapshots import Snapshots

    snaps, real_open = Snapshots(tmp_path), os.open
    taken: list[Path] = []

    def racing_open(path: str | os.PathLike[str], flags: int, *rest: int, **kw: Any) -> int:
        if Path(path).name.startswith(".tmp-") and not taken:
            taken.append(Path(path))
            if when == "after":
                fd = real_open(path, flags, *rest, **kw)
                Snapshots(tmp_path).cleanup()
                return fd
            Snapshots(tmp_path).cleanup()
        return real_open(path, flags, *rest, **kw)

    monkeypatch.setattr(os, "open", racing_open)
    tmp = snaps.prepare()
    monkeypatch.undo()
    assert taken and tmp != taken[0] and not taken[0].exists()
    assert (tmp / "fs").is_dir() and [p.name for p in tmp_path.iterdir()] == [tmp.name]
    snaps.discard(tmp)


def test_startup_cleanup_waits_for_a_locked_dir(tmp_path: Path) -> None:
    """A `.tmp-` dir still locked at start-up belongs to a live unpack elsewhere, or to the
    worker of a berthd killed a moment ago that is still exiting (CI saw one left behind).
    Cleanup removes it once its lock goes, and never touches one its owner committed."""
    from runtime.images.snapshots import Snapshots

    owner = Snapshots(tmp_path)
    committed, dying = owner.prepare(), owner.prepare()
    (dying / "fs" / "half").write_bytes(b"x")
    chain = "sha256:" + "ab" * 32
    Snapshots(tmp_path).cleanup()
    assert committed.is_dir() and dying.is_dir()
    owner.commit(committed, chain)
    os.close(owner._locks.pop(dying))  # its holder exits
    deadline = time.monotonic() + 10
    while dying.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not dying.exists()
    assert owner.has(chain) and [p.name for p in tmp_path.iterdir()] == [chain[7:]]
