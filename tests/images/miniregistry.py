"""Tiny distribution-protocol server over an OCI layout: token auth and fault injection."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class Faults:
    """What to break: cut blob responses, corrupt blobs, throttle, demand a bearer token."""

    cut_after: int | None = None  # bytes sent before the first N blob responses are cut
    cuts: int = 1
    corrupt: set[str] = field(default_factory=set)
    delay_per_chunk: float = 0.0
    chunk: int = 1 << 16
    token_user: tuple[str, str] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, range header)
    token_requests: list[dict[str, str]] = field(default_factory=list)


class MiniRegistry:
    """Serves repositories mapped to OCI layout dirs on 127.0.0.1 from a private thread."""

    def __init__(self, repos: dict[str, Path], faults: Faults) -> None:
        self.repos, self.faults = repos, faults
        self.tokens: set[str] = set()
        self.port = 0

    def _auth_ok(self, req: web.Request) -> bool:
        if self.faults.token_user is None:
            return True
        h = req.headers.get("Authorization", "")
        return h.startswith("Bearer ") and h[7:] in self.tokens

    def _challenge(self, repo: str) -> web.Response:
        hdr = (f'Bearer realm="http://127.0.0.1:{self.port}/token",service="mini",'
               f'scope="repository:{repo}:pull"')
        return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                 headers={"WWW-Authenticate": hdr})

    async def token(self, req: web.Request) -> web.Response:
        self.faults.token_requests.append(dict(req.query))
        auth = req.headers.get("Authorization", "")
        import base64

        want = self.faults.token_user
        ok = want is not None and auth == "Basic " + base64.b64encode(
            f"{want[0]}:{want[1]}".encode()).decode()
        if not ok or req.query.get("service") != "mini":
            return web.json_response({"details": "bad credentials"}, status=401)
        tok = secrets.token_hex(16)
        self.tokens.add(tok)
        return web.json_response({"token": tok, "expires_in": 300})

    async def base(self, req: web.Request) -> web.Response:
        return web.json_response({}) if self._auth_ok(req) else self._challenge("")

    def _blob(self, repo: str, digest: str) -> Path:
        return self.repos[repo] / "blobs" / "sha256" / digest.removeprefix("sha256:")

    async def manifest(self, req: web.Request) -> web.StreamResponse:
        repo, ref = req.match_info["repo"], req.match_info["ref"]
        if repo not in self.repos:
            raise web.HTTPNotFound()
        if not self._auth_ok(req):
            return self._challenge(repo)
        index = json.loads((self.repos[repo] / "index.json").read_text())
        if ref.startswith("sha256:"):
            data = self._blob(repo, ref).read_bytes()
            mt = json.loads(data).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
        else:
            hits = [m for m in index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
            if not hits:
                raise web.HTTPNotFound()
            data, mt = self._blob(repo, hits[0]["digest"]).read_bytes(), hits[0]["mediaType"]
        return web.Response(body=data, headers={"Content-Type": mt})

    async def blob(self, req: web.Request) -> web.StreamResponse:
        repo, digest = req.match_info["repo"], req.match_info["digest"]
        if not self._auth_ok(req):
            return self._challenge(repo)
        data = bytearray(self._blob(repo, digest).read_bytes())
        f = self.faults
        f.requests.append((req.path, req.headers.get("Range", "")))
        if digest in f.corrupt:
            data[len(data) // 2] ^= 0xFF
        start, status = 0, 200
        rng = req.headers.get("Range", "")
        if rng.startswith("bytes="):
            start, status = int(rng[6:].split("-")[0]), 206
        resp = web.StreamResponse(status=status)
        resp.content_length = len(data) - start
        await resp.prepare(req)
        sent, cut = 0, f.cut_after is not None and f.cuts > 0 and len(data) - start > f.cut_after
        if cut:
            f.cuts -= 1
        for pos in range(start, len(data), f.chunk):
            if cut and f.cut_after is not None and sent >= f.cut_after:
                assert req.transport is not None
                req.transport.abort()  # like a connection reset mid-transfer
                return resp
            piece = bytes(data[pos : pos + f.chunk])
            await resp.write(piece)
            sent += len(piece)
            if f.delay_per_chunk:
                await asyncio.sleep(f.delay_per_chunk)
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/", self.base)
        app.router.add_get("/token", self.token)
        app.router.add_get(r"/v2/{repo:.+}/manifests/{ref}", self.manifest)
        app.router.add_get(r"/v2/{repo:.+}/blobs/{digest}", self.blob)
        return app


@contextmanager
def mini_registry(repos: dict[str, Path], faults: Faults | None = None) -> Iterator[MiniRegistry]:
    """Run the server on a loopback port in a thread until the block exits."""
    srv = MiniRegistry(repos, faults or Faults())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(srv.app(), access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        srv.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()),
                         daemon=True)
    t.start()
    ready.wait(10)
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
