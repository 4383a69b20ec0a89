"""One pull: every missing layer streams from the registry straight into its snapshot.

Each layer unpacks in one pass as the blob's fetch thread receives, hashes and keeps it
(blobstream): in an unpack worker process (unpack_procs) when one is ready, else in the layer's
own thread. A pull whose layers turn out to hold many files starts the workers: in berthd, two
unpacks of small files spend their time trading the GIL, while the start of a worker costs more
than a layer of a few big files takes. Nothing waits for the image config except the short
commit step, which also waits for the parent layer's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.images.blobstream import Abandon, BlobStream
from runtime.images.content import DigestMismatch, DownloadFailed
from runtime.images.records import Image
from runtime.images.reference import Reference
from runtime.images.registry import Auth, RegistryClient, Resolved
from runtime.images.snapshots import chain_ids
from runtime.images.unpack import Detached, UnpackError, unpack_detached

if TYPE_CHECKING:
    from runtime.images.store import ImageStore

T = TypeVar("T")
REPORT_EVERY = 0.1  # seconds between two Downloading events of one layer
WARM_AFTER = 500  # entries a pull unpacks in berthd before it starts the unpack workers


@dataclass(frozen=True)
class PullEvent:
    """One step of a layer's pull, in the terms Docker's progress stream uses: Pulling fs layer
    or Already exists, then Downloading (bytes so far of total), Download complete and Pull
    complete."""

    digest: str
    status: str
    current: int = 0
    total: int = 0


PullProgress = Callable[[PullEvent], None]


@dataclass
class Unpacked:
    """A snapshot dir not yet committed and what resolve needs; when it was streamed, also its
    verified blob, published at commit (after the syncfs that flushes both)."""

    tmp: Path
    detached: Detached
    blob: BlobStream | None = None
    settle: Callable[[], None] = lambda: None  # wakes pulls waiting for this blob

    def drop(self, store: ImageStore) -> None:
        """Let go of all of it (the snapshot dir is already gone once committed)."""
        store.snapshots.discard(self.tmp)
        self.detached.applier.close()
        if self.blob is not None:
            self.blob.close()
            self.blob = None
        self.settle()


class Pull:
    """State of one PullImage: its cancel flag, download limit and the config's chain IDs."""

    def __init__(self, store: ImageStore, client: RegistryClient, r: Reference,
                 auth: Auth | None, progress: PullProgress | None = None) -> None:
        self.store, self.client, self.r, self.auth = store, client, r, auth
        self.progress = progress or (lambda _e: None)  # always called on the event loop
        self.listened = progress is not None  # CRI does not: no loop wake-ups for its events
        self.loop = asyncio.get_running_loop()
        self.fetching: set[str] = set()  # layer blobs missing when the pull began
        self.abandon = Abandon()
        self.buffers = store.buffers  # receive buffers, handed on between layers
        self.sem = asyncio.Semaphore(store.registry_config.max_concurrent_downloads)
        self.seen = itertools.count(1)  # entries unpacked in berthd (next() is atomic)
        self.chains: asyncio.Future[tuple[list[str], list[str]]] = \
            asyncio.get_running_loop().create_future()

    async def run(self, res: Resolved) -> Image:
        st, m = self.store, res.manifest
        layers: list[dict[str, Any]] = m.get("layers", [])
        cfg_digest = m["config"]["digest"]
        keep = [res.top_digest, res.manifest_digest, cfg_digest, *[ly["digest"] for ly in layers]]
        with st.pin(keep) as pin:
            if res.index_raw is not None:
                st.content.put_bytes(res.top_digest, res.index_raw)
            st.content.put_bytes(res.manifest_digest, res.manifest_raw)
            for ly in layers:
                missing = not st.content.has(ly["digest"])
                if missing:
                    self.fetching.add(ly["digest"])
                self.progress(PullEvent(ly["digest"], "Pulling fs layer" if missing
                                        else "Already exists"))
            tasks: list[asyncio.Future[None]] = []
            parent: asyncio.Future[None] | None = None
            for i, ly in enumerate(layers):
                parent = asyncio.ensure_future(self._layer(i, ly, parent))
                tasks.append(parent)
            try:
                await self._download(m["config"], None)
                cfg = json.loads(st.content.read_bytes(cfg_digest))
                diff_ids = list(cfg.get("rootfs", {}).get("diff_ids", []))
                if len(diff_ids) != len(layers):
                    raise ValueError(f"{len(layers)} layers but {len(diff_ids)} diff_ids")
                chains = chain_ids(diff_ids)
                pin(chains)
                self.chains.set_result((diff_ids, chains))
                await asyncio.gather(*tasks)
            except BaseException:
                self.abandon.set()
                self.chains.cancel()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            img = st.make_image(m, len(res.manifest_raw), cfg, res.manifest_digest,
                                str(res.platform), keep)
            tag = self.r.tagged()
            return st.record(img, [tag] if tag else [], [self.r.with_digest(res.top_digest)])

    async def _layer(self, i: int, ly: dict[str, Any], parent: asyncio.Future[None] | None
                     ) -> None:
        """Stream the layer if its blob is missing, then commit it once config and parent allow."""
        got = await self._download(ly, functools.partial(self._unpack, ly))
        try:
            diff_ids, chains = await asyncio.shield(self.chains)
            await self._commit(ly, diff_ids[i], chains[: i + 1], parent, got)
            if ly["digest"] in self.fetching:
                self.progress(PullEvent(ly["digest"], "Pull complete"))
        finally:
            if got is not None:
                got.drop(self.store)

    async def _download(self, desc: dict[str, Any],
                        unpack: Callable[[BlobStream, Path], Detached] | None
                        ) -> Unpacked | None:
        """Fetch a missing blob once per process (unpacking it on the way when asked)."""
        st, digest = self.store, desc["digest"]
        while not st.content.has(digest):
            other = st.downloads.get(digest)
            if other is not None:  # another pull fetches it: wait, then look again
                with contextlib.suppress(BaseException):
                    await asyncio.shield(other)
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            st.downloads[digest] = done
            settle = functools.partial(_settle, st.downloads, digest, done)
            got = None
            try:
                opener = self.client.blob_opener(self.r, digest, self.auth)
                async with self.sem if unpack is not None else contextlib.nullcontext():
                    got = await self.in_thread(self._stream, desc, opener, unpack)
                if got is not None:
                    got.settle = settle
                return got
            finally:
                if got is None:
                    settle()
        return None

    def _stream(self, desc: dict[str, Any], opener: Any,
                unpack: Callable[[BlobStream, Path], Detached] | None
                ) -> Unpacked | None:
        st = self.store
        bs = BlobStream(st.content, desc["digest"], int(desc.get("size", -1)), opener,
                        st.registry_config.retries, self.abandon, self.buffers)
        if unpack is not None and self.listened:
            bs.progress = self._reporter(desc["digest"], bs.size)
        try:
            if unpack is None:
                bs.finish()
                bs.publish(flushed=False)
                bs.close()
                return None
            bs.start()
            tmp = st.snapshots.prepare()
            try:
                try:
                    with self._unpack_slot(desc["digest"]):
                        detached = unpack(bs, tmp)
                except UnpackError as e:
                    bs.finish()  # bytes that are not what the manifest named: say that instead
                    raise e
                bs.finish()  # the digest check: a mismatch discards the snapshot
                self._report(PullEvent(desc["digest"], "Download complete"))
            except BaseException:
                st.snapshots.discard(tmp)
                raise
            return Unpacked(tmp, detached, bs)
        except BaseException:
            bs.close()
            raise

    def _unpack(self, ly: dict[str, Any], bs: BlobStream, tmp: Path) -> Detached:
        """Unpack a streaming layer into tmp: in a ready worker, else here."""
        st, media_type = self.store, ly.get("mediaType", "")
        with st.procs.idle() as worker:
            if worker is not None:
                return worker(bs.fd, bs.follow, str(tmp / "fs"), st.snapshots.lock_fd(tmp),
                              media_type, st.max_layer_bytes)
        return unpack_detached(bs, str(tmp / "fs"), media_type, st.max_layer_bytes,
                               vet=self._count)

    def _count(self, _m: tarfile.TarInfo) -> None:
        """One more entry unpacked in berthd: at WARM_AFTER, the workers start (in a thread of
        their own: this layer goes on meanwhile)."""
        if next(self.seen) == WARM_AFTER:
            threading.Thread(target=self.store.procs.warm, name="unpack-warm",
                             daemon=True).start()

    def _unpack_blob(self, ly: dict[str, Any]) -> Unpacked:
        """A layer whose blob is already stored (another image's, or an earlier pull's)."""
        st = self.store
        tmp = st.snapshots.prepare()
        try:
            with self._unpack_slot(ly["digest"]), open(st.content.path(ly["digest"]), "rb") as f:
                detached, digest = st.procs.unpack_file(
                    f.fileno(), str(tmp / "fs"), st.snapshots.lock_fd(tmp),
                    ly.get("mediaType", ""), st.max_layer_bytes)
        except BaseException:
            st.snapshots.discard(tmp)
            raise
        if digest != ly["digest"]:  # e.g. unflushed when power was lost
            detached.applier.close()
            st.snapshots.discard(tmp)
            st.content.delete(ly["digest"])
            raise DigestMismatch(f"stored layer {ly['digest']} was corrupt and is deleted; "
                                 "the next pull fetches it again")
        return Unpacked(tmp, detached)

    async def _commit(self, ly: dict[str, Any], diff_id: str, chains: list[str],
                      parent: asyncio.Future[None] | None, got: Unpacked | None) -> None:
        st, chain = self.store, chains[-1]
        lock = st.unpacking.setdefault(chain, asyncio.Lock())
        try:
            async with lock:  # a concurrent pull of the same layer waits, then finds it done
                if st.snapshots.has(chain):
                    if got is not None and got.blob is not None:
                        await self.in_thread(got.blob.publish, False)
                    if parent is not None:
                        await asyncio.shield(parent)
                    return
                mine = got is None
                if got is None:
                    got = await self.in_thread(self._unpack_blob, ly)
                try:
                    await self._commit_unpacked(ly, diff_id, chains, parent, got)
                finally:
                    if mine:
                        got.drop(st)
        finally:
            if not lock.locked():
                st.unpacking.pop(chain, None)

    async def _commit_unpacked(self, ly: dict[str, Any], diff_id: str, chains: list[str],
                               parent: asyncio.Future[None] | None, got: Unpacked) -> None:
        if got.detached.result.diff_id != diff_id:
            raise DigestMismatch(f"layer {ly['digest']}: diff id {got.detached.result.diff_id} "
                                 f"does not match {diff_id}")
        # resolve changes no size or inode count unless it copies up hard-linked lower files
        copies = bool(got.detached.applier.links)
        await self.in_thread(self._settle, got, chains[-1], not copies)
        if parent is not None:
            await asyncio.shield(parent)  # its failure fails this layer too
        await self.in_thread(self._resolve, got, chains, copies)
        self.store.snapshots.commit(got.tmp, chains[-1])

    def _settle(self, got: Unpacked, chain: str, measure: bool) -> None:
        """What needs no parent, in one trip to a thread while the parent may still unpack:
        the snapshot is trusted from its commit on, so its files are flushed first; a layer
        blob is not (it is checked again on reuse); the usage walk, when resolve cannot change
        it, stays off the in-order commit chain."""
        st = self.store
        if st.sync_snapshots and not got.detached.applier.flush():
            st.snapshots.sync(got.tmp)
        if got.blob is not None:
            got.blob.publish(True)
        if measure:
            st.snapshots.measure(got.tmp, chain)

    def _resolve(self, got: Unpacked, chains: list[str], copies: bool) -> None:
        """What needs the committed parents; copied-up file data is flushed and measured."""
        st = self.store
        got.detached.resolve(st.snapshots.lowers(chains[:-1]))
        if copies:
            if st.sync_snapshots:
                st.snapshots.sync(got.tmp)
            st.snapshots.measure(got.tmp, chains[-1])

    @contextlib.contextmanager
    def _unpack_slot(self, digest: str) -> Iterator[None]:
        """One of the store's unpack slots (shared by all pulls), waited for while the pull
        is not abandoned."""
        slots = self.store.unpack_slots
        while not slots.acquire(timeout=0.05):
            if self.abandon.is_set():
                raise DownloadFailed(f"download of {digest} was abandoned")
        try:
            yield
        finally:
            slots.release()

    def _reporter(self, digest: str, total: int) -> Callable[[int], None]:
        """Called by the layer's thread with its byte count: a Downloading event now and then
        (the first at once, so even a small layer shows one)."""
        last = -REPORT_EVERY

        def report(pos: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= REPORT_EVERY or pos == total:
                last = now
                self._report(PullEvent(digest, "Downloading", pos, total))
        return report

    def _report(self, ev: PullEvent) -> None:
        """From a layer's thread: the callback runs on the loop, in the order of the calls."""
        if self.listened:
            self.loop.call_soon_threadsafe(self.progress, ev)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn in the unpack pool; if we are cancelled, stop it before going on, and drop
        an Unpacked it still finished (its snapshot dir and blob lock would leak)."""
        work = asyncio.get_running_loop().run_in_executor(self.store.unpack_pool, fn, *args)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            self.abandon.set()
            # The thread must stop writing before cleanup, however often we are cancelled (a
            # pull's cancel reaches its layers twice: through gather, then from run()).
            while not work.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({work})
            if not work.cancelled() and work.exception() is None:
                orphan = work.result()
                if isinstance(orphan, Unpacked):
                    orphan.drop(self.store)
            raise


def _settle(downloads: dict[str, asyncio.Future[None]], digest: str,
            done: asyncio.Future[None]) -> None:
    """The blob is published (or its download failed): pulls waiting for it look again."""
    if not done.done():
        del downloads[digest]
        done.set_result(None)
