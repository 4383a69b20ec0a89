"""Content store: verification before visibility, shared downloads, resume, timeouts."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import time
from pathlib import Path

import pytest

from runtime.images.content import ContentStore, DigestMismatch, ProgressTimeout, Retryable

DATA = os.urandom(3 << 20)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Source:
    """Serves DATA in chunks from an offset, optionally failing or stalling once."""

    def __init__(self, data: bytes = DATA, fail_at: int | None = None, stall: float = 0,
                 honour_range: bool = True) -> None:
        self.data, self.fail_at, self.stall, self.range = data, fail_at, stall, honour_range
        self.calls: list[int] = []

    async def __call__(self, offset: int):
        self.calls.append(offset)
        start = offset if self.range else 0

        async def gen():
            pos = start
            while pos < len(self.data):
                if self.fail_at is not None and pos >= self.fail_at:
                    self.fail_at = None
                    raise Retryable("connection reset")
                if self.stall:
                    await asyncio.sleep(self.stall)
                yield self.data[pos : pos + 65536]
                pos += 65536
                await asyncio.sleep(0)

        return start, gen()


def _get(store: ContentStore, *args, **kw) -> Path:
    async def main() -> Path:
        return await store.fetch(*args, **kw).wait()

    return asyncio.run(main())


def _visible(store: ContentStore) -> list[str]:
    return sorted(os.listdir(store.blobs)) + sorted(os.listdir(store.ingest_dir))


@pytest.mark.timeout(30)
def test_fetch_verifies_and_publishes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = _get(store, DIGEST, len(DATA), Source())
    assert path == store.path(DIGEST) and path.read_bytes() == DATA
    assert store.list() == {DIGEST}


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
def test_concurrent_fetches_share_one_download(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    src = Source()

    async def main() -> list[Path]:
        ings = [store.fetch(DIGEST, len(DATA), src) for _ in range(5)]
        return await asyncio.gather(*(i.wait() for i in ings))

    assert len(set(asyncio.run(main()))) == 1
    assert src.calls == [0]


@pytest.mark.timeout(30)
def test_resume_with_range_after_interruption(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    src = Source(fail_at=1 << 20)
    _get(store, DIGEST, len(DATA), src)
    assert src.calls == [0, 1 << 20]
    # a server ignoring Range restarts from zero and still verifies
    store.delete(DIGEST)
    (store.ingest_dir / DIGEST[7:]).write_bytes(DATA[:1000])
    src2 = Source(honour_range=False)
    _get(store, DIGEST, len(DATA), src2)
    assert src2.calls == [1000] and store.read_bytes(DIGEST) == DATA


@pytest.mark.timeout(30)
def test_progress_timeout_is_per_chunk(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    slow_but_moving = Source(DATA[: 10 * 65536], stall=0.05)
    digest = "sha256:" + hashlib.sha256(slow_but_moving.data).hexdigest()
    _get(store, digest, -1, slow_but_moving, progress_timeout=0.3)
    with pytest.raises(ProgressTimeout):
        _get(store, DIGEST, len(DATA), Source(stall=1), progress_timeout=0.2,
                                retries=0)


@pytest.mark.timeout(30)
def test_follow_reader_tails_download(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)

    async def main() -> bytes:
        ing = store.fetch(DIGEST, len(DATA), Source(stall=0.001))
        r = ing.reader()
        try:
            got = await asyncio.to_thread(lambda: b"".join(iter(lambda: r.read(100_000), b"")))
        finally:
            r.close()
        await ing.wait()
        return got

    assert asyncio.run(main()) == DATA


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
