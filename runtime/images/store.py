"""Image store API for the CRI image service: pull, get, list, remove, usage, rootfs lowers."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runtime.images.blobstream import Buffers
from runtime.images.content import ContentStore, DigestMismatch, DownloadFailed, Retryable
from runtime.images.puller import Pull, PullProgress
from runtime.images.pusher import Progress, Push, PushResult
from runtime.images.records import Image, ImageConfig, ImageIndex
from runtime.images.reference import normalize, parse
from runtime.images.registry import Auth, Platform, RegistryClient, RegistryConfig, RegistryError
from runtime.images.snapshots import Snapshots, chain_ids
from runtime.images.unpack import DEFAULT_MAX_LAYER_BYTES, UnpackError
from runtime.images.unpack_procs import LINGER, UnpackProcs

_libc = ctypes.CDLL(None)
_HEXPREFIX = re.compile(r"^(sha256:)?[a-f0-9]{3,64}$")


class InUse(Exception):
    """The image backs a container, so it cannot be removed."""


class PullError(Exception):
    """A pull failed for a reason other than the registry answering with an error."""


class ImageStore:
    """Images under `<state_dir>/images`: blobs, snapshots and the image index."""

    def __init__(self, state_dir: Path | str, registry: RegistryConfig | None = None,
                 max_layer_bytes: int = DEFAULT_MAX_LAYER_BYTES, unpack_workers: int = 4,
                 sync_snapshots: bool = True) -> None:
        root = Path(state_dir) / "images"
        root.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(root)
        self.snapshots = Snapshots(root / "snapshots")
        self.index = ImageIndex(root)
        self.registry_config = registry or RegistryConfig()
        self.max_layer_bytes = max_layer_bytes
        self.sync_snapshots = sync_snapshots
        self._client: RegistryClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._pinned: dict[str, int] = {}
        # pull runs on one event loop; get/list/remove may come from other (gRPC) threads
        self._lock = threading.RLock()
        self.unpacking: dict[str, asyncio.Lock] = {}  # chain id -> its one committer
        self.downloads: dict[str, asyncio.Future[None]] = {}  # digest -> the one download
        self._unpack_workers = unpack_workers
        # Layers stream max_concurrent_downloads at a time, but at most one per CPU unpacks,
        # each in a worker process of its own (unpack_procs: in threads, the unpacks only traded
        # the GIL back and forth); the others download ahead meanwhile.
        slots = max(1, min(self.registry_config.max_concurrent_downloads,
                           len(os.sched_getaffinity(0))))
        self.unpack_slots = threading.BoundedSemaphore(slots)
        self.procs = UnpackProcs(slots, str(self.snapshots.root))  # one per slot
        self._linger: asyncio.TimerHandle | None = None
        self._pool_: ThreadPoolExecutor | None = None
        self._buffers: Buffers | None = None
        self._pulls = 0  # in flight; the last one to end lets the pool and its memory go
        self._idle: asyncio.Future[None] | None = None
        self.content.cleanup()
        self.snapshots.cleanup()
        # layers of pulls abandoned long ago; recent ones stay so a retry resumes cheaply
        self.gc(min_age=self.content.stale_after)
        if self.snapshots.unmeasured():  # once, after an upgrade: walk them off the caller's path
            threading.Thread(target=self.snapshots.total, name="usage-backfill",
                             daemon=True).start()

    async def aclose(self) -> None:
        """Release the registry client's connections (a dead loop's client is just dropped)."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
        if self._pool_ is not None:
            self._pool_.shutdown(wait=False)
            self._pool_ = None
        if self._linger is not None:
            self._linger.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self.procs.close)

    @property
    def unpack_pool(self) -> ThreadPoolExecutor:
        """Layers unpack here, not in the loop's default pool that other RPCs share."""
        if self._pool_ is None:
            # streams, plus room for commits (resolve, syncfs) that must not wait behind them
            n = max(self._unpack_workers, 2 * self.registry_config.max_concurrent_downloads + 2)
            self._pool_ = ThreadPoolExecutor(n, thread_name_prefix="unpack")
        return self._pool_

    @property
    def buffers(self) -> Buffers:
        """Receive buffers the pulls' layer streams share, dropped with the unpack pool."""
        if self._buffers is None:
            self._buffers = Buffers()
        return self._buffers

    async def client(self) -> RegistryClient:
        """Made lazily, and again if the caller moved to another event loop (asyncio.run).
        Built in a thread: httpx's client loads the CA bundle into an SSL context, 20-60 ms
        of CPU that on the loop stalled every other RPC behind a node's first pull."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            made = await asyncio.to_thread(RegistryClient, self.registry_config)
            if self._client is None or self._client_loop is not loop:
                self._client, self._client_loop = made, loop
            else:  # a concurrent first pull's client got there first
                await made.aclose()
        return self._client

    async def pull(self, ref: str, auth: Auth | None = None,
                   platform: Platform | None = None,
                   progress: PullProgress | None = None) -> Image:
        """Fetch, verify and unpack ref; the image becomes visible only once complete.
        progress hears per-layer steps and byte counts (on the loop) while it happens."""
        r = normalize(ref)
        self._pulls += 1
        loop = asyncio.get_running_loop()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.procs.open()
        try:
            client = await self.client()
            res = await client.resolve(r, auth, platform)
            return await Pull(self, client, r, auth, progress).run(res)
        except (RegistryError, InUse):
            raise
        except (Retryable, DigestMismatch, DownloadFailed, UnpackError, OSError, ValueError,
                KeyError) as e:
            raise PullError(f"pull {r}: {e} (registry {r.domain})") from e
        finally:
            self._pulls -= 1
            if not self._pulls:
                self._linger = loop.call_later(LINGER, loop.run_in_executor, None,
                                               self.procs.stop_idle)
            if not self._pulls and self._pool_ is not None:
                pool, self._pool_, self._buffers = self._pool_, None, None
                self._idle = loop.run_in_executor(None, _let_go, pool)

    async def push(self, source: str, target: str | None = None, auth: Auth | None = None,
                   progress: Progress | None = None) -> PushResult:
        """Upload an image's blobs and manifest; GC keeps away from them meanwhile."""
        job = Push(self, await self.client(), source, target, auth, progress)
        with self.pin([job.image.manifest_digest, *job.image.blobs]):
            return await job.run()

    def make_image(self, manifest: dict[str, Any], manifest_size: int, cfg: dict[str, Any],
                   manifest_digest: str, platform: str, blobs: list[str]) -> Image:
        """An Image for a manifest whose blobs and snapshots are all in place."""
        layers = manifest.get("layers", [])
        diff_ids = list(cfg["rootfs"]["diff_ids"])
        return Image(
            id=manifest["config"]["digest"],
            repo_tags=[],
            repo_digests=[],
            size=sum(int(x.get("size", 0)) for x in [manifest["config"], *layers]) + manifest_size,
            config=ImageConfig.from_oci(cfg),
            manifest_digest=manifest_digest,
            platform=platform,
            layers=[ly["digest"] for ly in layers],
            diff_ids=diff_ids,
            chain_ids=chain_ids(diff_ids),
            blobs=list(dict.fromkeys(blobs)),
        )

    def record(self, img: Image, tags: builtins.list[str],
               digests: builtins.list[str]) -> Image:
        """Insert or merge; a tag moves to the new image like `docker pull` does."""
        with self._lock:
            existing = self.index.images.get(img.id)
            if existing is not None:
                img.repo_tags, img.repo_digests = existing.repo_tags, existing.repo_digests
            for tag in tags:
                for other in self.index.images.values():
                    if other.id != img.id and tag in other.repo_tags:
                        other.repo_tags.remove(tag)
                if tag not in img.repo_tags:
                    img.repo_tags.append(tag)
            img.repo_digests += [d for d in digests if d not in img.repo_digests]
            self.index.images[img.id] = img
            self.index.save()
            return img

    def import_archive(self, path: str | Path) -> builtins.list[Image]:
        """Air-gapped import of an OCI layout tar or a `docker save` tarball."""
        from runtime.images.archive import import_archive

        with self._lock:  # its blobs are unreferenced until recorded: keep GC out meanwhile
            return import_archive(self, Path(path))

    @contextlib.contextmanager
    def pin(self, keys: list[str]) -> Any:
        """Keep GC away from what an in-flight pull already wrote."""
        held: list[str] = []

        def add(more: list[str]) -> None:
            with self._lock:
                for k in more:
                    self._pinned[k] = self._pinned.get(k, 0) + 1
                    held.append(k)

        add(keys)
        try:
            yield add
        finally:
            with self._lock:
                for k in held:
                    self._pinned[k] -= 1
                    if not self._pinned[k]:
                        del self._pinned[k]

    def pinned(self) -> set[str]:
        """Digests and chain IDs that in-flight pulls hold."""
        with self._lock:
            return set(self._pinned)

    def get(self, ref_or_id: str) -> Image | None:
        """By id, unique id prefix, tag or digest reference."""
        with self._lock:
            images = dict(self.index.images)
        if ref_or_id in images:
            return images[ref_or_id]
        if f"sha256:{ref_or_id}" in images:
            return images[f"sha256:{ref_or_id}"]
        with contextlib.suppress(ValueError):
            r = parse(ref_or_id)
            for img in images.values():
                if r.digest and (r.with_digest(r.digest) in img.repo_digests
                                 or (r.digest == img.manifest_digest
                                     and any(d.startswith(r.name + "@")
                                             for d in img.repo_digests))):
                    return img
                if not r.digest and normalize(ref_or_id).tagged() in img.repo_tags:
                    return img
        if _HEXPREFIX.match(ref_or_id):
            prefix = ref_or_id if ref_or_id.startswith("sha256:") else f"sha256:{ref_or_id}"
            hits = [i for i in images.values() if i.id.startswith(prefix)]
            if len(hits) == 1:
                return hits[0]
        return None

    def list(self) -> list[Image]:
        """Every complete image."""
        with self._lock:
            return list(self.index.images.values())

    def remove(self, ref_or_id: str, in_use: Callable[[str], bool] = lambda _i: False) -> None:
        """Untag one of several tags, or delete the image (refused while a container uses it)."""
        with self._lock:
            img = self.get(ref_or_id)
            if img is None:
                return
            tag = None
            with contextlib.suppress(ValueError):
                r = parse(ref_or_id)
                tag = normalize(ref_or_id).tagged() if not r.digest else None
            if tag in img.repo_tags and len(img.repo_tags) > 1:
                img.repo_tags.remove(tag)
                self.index.save()
                return
            if in_use(img.id):
                raise InUse(f"image {img.id} ({', '.join(img.repo_tags) or 'untagged'}) "
                            "is in use by a container")
            del self.index.images[img.id]
            self.index.save()
            self.gc()

    def untag(self, image_id: str, ref: str) -> bool:
        """Drop one tag or digest reference, keeping the image even when it is left dangling
        (Docker's untag; the front end decides whether to delete it after)."""
        with self._lock:
            img = self.index.images.get(image_id)
            if img is None or ref not in (*img.repo_tags, *img.repo_digests):
                return False
            for refs in (img.repo_tags, img.repo_digests):
                if ref in refs:
                    refs.remove(ref)
            self.index.save()
            return True

    def tag(self, image_id: str, ref: str) -> str:
        """Point a tag at an image, moving it off whichever image held it; returns the tag."""
        tag = normalize(ref).tagged()
        if tag is None:
            raise ValueError(f"{ref} names no tag")
        with self._lock:
            for img in self.index.images.values():
                if tag in img.repo_tags and img.id != image_id:
                    img.repo_tags.remove(tag)
            target = self.index.images[image_id]
            if tag not in target.repo_tags:
                target.repo_tags.append(tag)
            self.index.save()
        return tag

    def gc(self, min_age: float = 0) -> None:
        """Delete blobs and snapshots no image or running pull references (if min_age old)."""
        cutoff = time.time() - min_age
        with self._lock:
            want = self.pinned()
            for img in self.index.images.values():
                want.update(img.blobs)
                want.update(img.chain_ids)
            for d in self.content.list() - want:
                if not min_age or _mtime(self.content.path(d)) < cutoff:
                    self.content.delete(d)
            for c in self.snapshots.list() - want:
                if not min_age or _mtime(self.snapshots.fs(c).parent) < cutoff:
                    self.snapshots.remove(c)

    def fs_usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by the image filesystem, cheap enough for the event loop: blobs
        are stat'ed once each, snapshots answer from the usage recorded at their commit (one
        still being back-filled after an upgrade counts as empty until its walk is done)."""
        size, inodes = self.content.usage()
        snap_bytes, snap_inodes = self.snapshots.total(walk=False)
        return size + snap_bytes, inodes + snap_inodes

    def rootfs_lowers(self, image_id: str) -> builtins.list[str]:
        """Overlay lowerdirs for a container of this image, top layer first."""
        img = self.index.images[image_id]
        return self.snapshots.lowers(img.chain_ids)

    def config(self, image_id: str) -> dict[str, Any]:
        """The full image config blob as JSON."""
        doc: dict[str, Any] = json.loads(self.content.read_bytes(image_id))
        return doc


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _let_go(pool: ThreadPoolExecutor) -> None:
    """A pull leaves ~60 MiB in its threads' malloc arenas (measured); with the threads gone,
    malloc_trim gives nearly all of it back to the system."""
    pool.shutdown(wait=True)
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
