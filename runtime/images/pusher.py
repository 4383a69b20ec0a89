"""Push a stored image to a registry as the distribution spec lays it out.

Per blob: a HEAD first (the registry may have it), then a cross-repository mount when the image
is known under another repository of the same registry, then an upload (one PUT for small blobs,
PATCH chunks then a closing PUT for big ones). The manifest goes last, byte for byte as stored,
so its digest is the one the image was pulled or built with, and a push that fails on any blob
never touches the registry's manifest.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import httpx

from runtime.images.content import Retryable
from runtime.images.reference import Reference, normalize, parse
from runtime.images.registry import (
    MT_DOCKER_MANIFEST,
    MT_OCI_MANIFEST,
    Auth,
    RegistryClient,
    RegistryError,
)

if TYPE_CHECKING:
    from runtime.images.store import ImageStore

CHUNK = 1 << 20  # one file read and one progress report per MiB
MONOLITHIC_MAX = 32 << 20  # bigger blobs go up in PATCH chunks of this size
MAX_CONCURRENT_UPLOADS = 5  # dockerd's default
RETRIES = 3


class PushError(Exception):
    """A push failed; the message names the image, the registry and what went wrong."""


@dataclass(frozen=True)
class PushEvent:
    """One step of a push, in the terms Docker's progress stream uses."""

    digest: str  # the blob, or the manifest digest for the final event
    status: str  # Preparing, Waiting, Pushing, Pushed, Layer already exists, Mounted from X
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class PushResult:
    """What `docker push` prints at the end: tag, manifest digest and size."""

    ref: str
    digest: str
    size: int


Progress = Callable[[PushEvent], None]


class _Session:
    """The registry client's requests for one repository, asking for pull and push rights."""

    def __init__(self, client: RegistryClient, ref: Reference, auth: Auth | None) -> None:
        self.client, self.ref, self.auth = client, ref, auth
        self.base = client.endpoints(ref.domain)[-1]  # mirrors serve pulls only

    def url(self, rel: str) -> str:
        return f"{self.base}/v2/{self.ref.path}/{rel}"

    async def send(self, method: str, url: str, headers: dict[str, str] | None = None,
                   body: Callable[[], Any] | None = None) -> httpx.Response:
        """One request (url may be a registry's relative Location); failures as PushError."""
        try:
            return await self.client.request(self.ref, urljoin(self.base + "/", url), self.auth,
                                             method=method, headers=headers, body=body,
                                             actions="pull,push")
        except Retryable as e:
            raise PushError(f"push {self.ref}: {e}") from e
        except RegistryError as e:
            raise PushError(str(e).replace("pull ", "push ", 1)) from e

    def fail(self, resp: httpx.Response, what: str) -> PushError:
        detail = ""
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
        except (ValueError, AttributeError):
            detail = resp.text[:200]
        hint = {401: " (check credentials)", 403: " (access denied)"}.get(resp.status_code, "")
        return PushError(f"push {self.ref}: {what}: {resp.status_code} {resp.reason_phrase} "
                         f"from registry {self.ref.domain}{hint}" + (f": {detail}" if detail
                                                                      else ""))


def _file_chunks(path: str, offset: int, length: int,
                 report: Callable[[int], None]) -> Callable[[], AsyncIterator[bytes]]:
    """A factory of async streams over part of a file; reads happen off the event loop."""

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(None, os.open, path, os.O_RDONLY)
        try:
            done = 0
            while done < length:
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(CHUNK, length - done), offset + done)
                if not chunk:
                    raise PushError(f"blob file {path} ended early")
                done += len(chunk)
                report(len(chunk))
                yield chunk
        finally:
            os.close(fd)

    return stream


def _with_query(location: str, **params: str) -> str:
    sep = "&" if "?" in location else "?"
    return location + sep + "&".join(f"{k}={v}" for k, v in params.items())


class Push:
    """One push of one image to one reference."""

    def __init__(self, store: ImageStore, client: RegistryClient, source: str,
                 target: str | None, auth: Auth | None, progress: Progress | None = None) -> None:
        img = store.get(source)
        if img is None:
            raise PushError(f"push {source}: no such image")
        try:
            self.ref = normalize(target or source)
        except ValueError as e:
            raise PushError(f"push {target or source}: {e}") from None
        if self.ref.digest:
            raise PushError(f"push {self.ref}: cannot push to a digest reference; give a tag")
        self.store, self.image = store, img
        self.progress = progress or (lambda _e: None)
        self.session = _Session(client, self.ref, auth)

    def _mount_sources(self) -> list[str]:
        """Other repositories on the same registry that already hold this image's blobs."""
        out: list[str] = []
        for name in [*self.image.repo_digests, *self.image.repo_tags]:
            try:
                r = parse(name)
            except ValueError:
                continue
            if r.domain == self.ref.domain and r.path != self.ref.path and r.path not in out:
                out.append(r.path)
        return out

    async def run(self) -> PushResult:
        content = self.store.content
        digest = self.image.manifest_digest
        if not content.has(digest):
            raise PushError(f"push {self.ref}: the manifest {digest} of image {self.image.id} "
                            "is not stored (was the image imported without it?)")
        raw = await asyncio.get_running_loop().run_in_executor(None, content.read_bytes, digest)
        manifest: dict[str, Any] = json.loads(raw)
        mt = manifest.get("mediaType") or (
            MT_OCI_MANIFEST if "oci" in manifest["config"].get("mediaType", "") else
            MT_DOCKER_MANIFEST)
        blobs = [manifest["config"], *manifest.get("layers", [])]
        for d in blobs:
            if not content.has(d["digest"]):
                raise PushError(f"push {self.ref}: blob {d['digest']} of image {self.image.id} "
                                "is not in the content store")
        for d in blobs[1:]:
            self.progress(PushEvent(d["digest"], "Preparing"))
        gate = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)

        async def one(desc: dict[str, Any]) -> None:
            async with gate:
                await self._blob(desc["digest"], int(desc["size"]))

        tasks = [asyncio.ensure_future(one(d)) for d in blobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        await self._manifest(raw, mt, digest)
        self.store.record(self.image, [], [self.ref.with_digest(digest)])
        self.progress(PushEvent(digest, "Pushed manifest", len(raw), len(raw)))
        return PushResult(str(self.ref), digest, len(raw))

    async def _blob(self, digest: str, size: int) -> None:
        s = self.session
        resp = await s.send("HEAD", s.url(f"blobs/{digest}"))
        if resp.status_code == 200:
            self.progress(PushEvent(digest, "Layer already exists", size, size))
            return
        if resp.status_code not in (404, 401, 403):
            raise s.fail(resp, f"checking blob {digest}")
        location = ""
        for repo in self._mount_sources():
            resp = await s.send("POST", _with_query(s.url("blobs/uploads/"), mount=digest,
                                                    **{"from": repo}))
            if resp.status_code == 201:
                self.progress(PushEvent(digest, f"Mounted from {repo}", size, size))
                return
            if resp.status_code == 202:  # the registry started a plain upload instead
                location = resp.headers.get("location", "")
                break
        last: PushError | None = None
        for _ in range(RETRIES):
            try:
                if not location:
                    resp = await s.send("POST", s.url("blobs/uploads/"))
                    if resp.status_code != 202 or "location" not in resp.headers:
                        raise s.fail(resp, f"starting the upload of {digest}")
                    location = resp.headers["location"]
                await self._upload(location, digest, size)
                self.progress(PushEvent(digest, "Pushed", size, size))
                return
            except PushError as e:
                last, location = e, ""
        assert last is not None
        raise last

    async def _upload(self, location: str, digest: str, size: int) -> None:
        s, path = self.session, str(self.store.content.path(digest))
        sent = 0

        def report(n: int) -> None:
            nonlocal sent
            sent += n
            self.progress(PushEvent(digest, "Pushing", sent, size))

        offset = 0
        if size > MONOLITHIC_MAX:
            while offset < size:
                n = min(MONOLITHIC_MAX, size - offset)
                resp = await s.send("PATCH", location, {
                    "Content-Type": "application/octet-stream", "Content-Length": str(n),
                    "Content-Range": f"{offset}-{offset + n - 1}"},
                    _file_chunks(path, offset, n, report))
                if resp.status_code != 202:
                    raise s.fail(resp, f"uploading {digest}")
                location = resp.headers.get("location", location)
                offset += n
        n = size - offset
        resp = await s.send("PUT", _with_query(location, digest=digest), {
            "Content-Type": "application/octet-stream", "Content-Length": str(n)},
            _file_chunks(path, offset, n, report) if n else None)
        if resp.status_code != 201:
            raise s.fail(resp, f"finishing the upload of {digest}")

    async def _manifest(self, raw: bytes, mt: str, digest: str) -> None:
        s = self.session
        resp = await s.send("PUT", s.url(f"manifests/{self.ref.tag}"),
                            {"Content-Type": mt}, lambda: raw)
        if resp.status_code not in (200, 201):
            raise s.fail(resp, "putting the manifest")
        got = resp.headers.get("docker-content-digest")
        if got and got != digest:
            raise PushError(f"push {self.ref}: registry stored the manifest as {got}, "
                            f"expected {digest}")
