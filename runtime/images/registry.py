"""Distribution-spec v2 client: manifests, platform choice, token/basic auth, blob streams."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import ipaddress
import json
import platform as _platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from runtime.images import blobhttp
from runtime.images.blobhttp import BlobHTTP
from runtime.images.content import ProgressTimeout, Retryable
from runtime.images.reference import Reference, validate_digest

# httpx imports anyio's asyncio backend on its first request: ~60 ms of imports that would run
# inside the first PullImage, on the event loop. Loaded with this module, at start-up instead.
importlib.import_module("anyio._backends._asyncio")

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
MANIFEST_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
MANIFEST_MAX = 4 << 20
_ARCH = {"x86_64": ("amd64", ""), "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
         "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": ("386", ""),
         "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}
_HINTS = {401: "check credentials", 403: "access denied", 404: "not found",
          429: "rate limited", 502: "bad gateway", 503: "registry unavailable"}


@dataclass(frozen=True)
class Auth:
    """Mirror of CRI AuthConfig."""

    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def basic(self) -> tuple[str, str] | None:
        """Username/password, decoding the combined `auth` field when that is what we got."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            user, _, pw = base64.b64decode(self.auth).decode().partition(":")
            return user, pw
        return None


@dataclass(frozen=True)
class Platform:
    """OS/architecture/variant a manifest was built for."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def host_platform() -> Platform:
    """The node's own platform, as an index's platform field would name it."""
    arch, variant = _ARCH.get(_platform.machine(), (_platform.machine(), ""))
    return Platform("linux", arch, variant)


@dataclass
class RegistryConfig:
    """Per-node registry settings (insecure hosts, mirrors, limits)."""

    insecure: set[str] = field(default_factory=set)
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    progress_timeout: float = 300.0
    max_concurrent_downloads: int = 3
    retries: int = 5


class RegistryError(Exception):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, ref: str, host: str, status: int, reason: str, detail: str = "") -> None:
        self.ref, self.host, self.status = ref, host, status
        hint = _HINTS.get(status, "")
        msg = f"pull {ref}: {status} {reason} from registry {host}" if status else (
            f"pull {ref}: {reason} (registry {host})")
        msg += f" ({hint})" if hint else ""
        super().__init__(msg + (f": {detail}" if detail else ""))


class Unauthorized(RegistryError):
    """Missing or wrong credentials."""


class NotFound(RegistryError):
    """Repository, tag, digest or platform does not exist."""


@dataclass
class Resolved:
    """What a reference points at, after choosing this node's platform from any index."""

    top_digest: str
    manifest_digest: str
    manifest: dict[str, Any]
    manifest_raw: bytes
    media_type: str
    platform: Platform
    index_raw: bytes | None = None


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if not host.endswith("]") else host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _fingerprint(auth: Auth | None) -> str:
    if auth is None:
        return ""
    fields = (auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token)
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()


def _token_key(ref: Reference, url: str, auth: Auth | None,
               actions: str = "pull") -> tuple[str, tuple[str, str, str]]:
    """Tokens are per endpoint (a mirror's never goes to origin), per repository scope and per
    credential, so a pull without a secret never rides on a token another pod's secret obtained,
    and a pull's token is never offered for a push."""
    scope = f"repository:{ref.path}:{actions}"
    return scope, (httpx.URL(url).netloc.decode(), scope, _fingerprint(auth))


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


# blocking, in an unpack thread: offset -> (offset the server starts at, readinto, close, cut);
# readinto fills a buffer (0 at the end); cut shuts the socket from another thread, so a read
# blocked on a stalled registry returns
ReadInto = Callable[[memoryview], int]
SyncOpener = Callable[[int], tuple[int, ReadInto, Callable[[], None], Callable[[], None]]]


class RegistryClient:
    """One client per store; caches bearer tokens per (host, repository scope)."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        t = self.config.progress_timeout
        timeout = httpx.Timeout(t, connect=min(t, 30.0))
        self.http = httpx.AsyncClient(timeout=timeout, follow_redirects=True, trust_env=False)
        # blob bodies: blocking reads in the unpack threads, so no byte crosses the event loop
        self.blobs = BlobHTTP(t, min(t, 30.0))
        self._tokens: dict[tuple[str, str, str], str] = {}

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.http.aclose()
        self.blobs.close()

    def endpoints(self, host: str) -> list[str]:
        """Mirrors first, then the registry itself; plain HTTP only for loopback or insecure."""
        out = list(self.config.mirrors.get(host, []))
        origin = "registry-1.docker.io" if host == "docker.io" else host
        scheme = "http" if _is_loopback(host) or host in self.config.insecure else "https"
        return [*out, f"{scheme}://{origin}"]

    def _authed(self, key: tuple[str, str, str], headers: dict[str, str]) -> dict[str, str]:
        """headers plus the token or basic header an earlier challenge for key earned."""
        return {**headers, "Authorization": self._tokens[key]} if key in self._tokens else headers

    async def request(self, ref: Reference, url: str, auth: Auth | None, *,
                      method: str = "GET", headers: dict[str, str] | None = None,
                      body: Callable[[], Any] | None = None,
                      actions: str = "pull") -> httpx.Response:
        """One request with the auth dance: a 401 challenge yields a token or basic header for
        `actions` on the repository, then the request goes again (`body` is a factory, so the
        retry gets a fresh stream)."""
        scope, key = _token_key(ref, url, auth, actions)
        for attempt in range(2):
            try:
                resp = await self.http.request(method, url, content=body() if body else None,
                                               headers=self._authed(key, headers or {}))
            except httpx.TransportError as e:
                raise Retryable(f"{type(e).__name__} talking to {ref.domain}: {e}") from e
            if resp.status_code != 401 or attempt:
                return resp
            challenge = resp.headers.get("www-authenticate", "")
            await resp.aclose()
            self._tokens[key] = await self._authorize(ref, challenge, scope, auth)
        raise AssertionError("unreachable")

    async def _authorize(self, ref: Reference, header: str, scope: str, auth: Auth | None) -> str:
        scheme, params = _challenge(header)
        basic = auth.basic() if auth else None
        if scheme == "basic":
            if basic is None:
                raise Unauthorized(str(ref), ref.domain, 401, "Unauthorized",
                                   "no basic auth credentials")  # dockerd's words
            raw = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            return f"Basic {raw}"
        if scheme != "bearer" or "realm" not in params:
            raise Unauthorized(str(ref), ref.domain, 401, "Unauthorized",
                               f"unsupported challenge {header!r}")
        if auth and auth.registry_token:
            return f"Bearer {auth.registry_token}"
        q = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            if auth and auth.identity_token:
                data = {**q, "grant_type": "refresh_token", "refresh_token": auth.identity_token,
                        "client_id": "berth"}
                resp = await self.http.post(params["realm"], data=data)
            else:
                resp = await self.http.get(params["realm"], params=q,
                                           auth=httpx.BasicAuth(*basic) if basic else None)
        except httpx.TransportError as e:
            raise RegistryError(str(ref), ref.domain, 0, f"token endpoint unreachable: {e}") from e
        if resp.status_code != 200:
            cls = Unauthorized if resp.status_code in (401, 403) else RegistryError
            raise cls(str(ref), ref.domain, resp.status_code, resp.reason_phrase,
                      "token endpoint refused")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthorized(str(ref), ref.domain, 401, "Unauthorized", "no token in response")
        return f"Bearer {token}"

    def _error(self, ref: Reference, status: int, reason: str, what: str) -> RegistryError:
        cls = {401: Unauthorized, 403: Unauthorized, 404: NotFound}.get(status, RegistryError)
        return cls(str(ref), ref.domain, status, reason, what)

    async def manifest(self, ref: Reference, obj: str, auth: Auth | None
                       ) -> tuple[str, bytes, str]:
        """(media type, raw bytes, digest) of a manifest or index, verified when asked by digest."""
        accept = ", ".join([*MANIFEST_TYPES, *INDEX_TYPES])
        last: RegistryError | None = None
        eps = self.endpoints(ref.domain)
        for attempt in range(self.config.retries + 1):
            transient = False
            for ep in eps:
                try:
                    resp = await self.request(ref, f"{ep}/v2/{ref.path}/manifests/{obj}", auth,
                                              headers={"Accept": accept})
                except Retryable as e:
                    last, transient = RegistryError(str(ref), ref.domain, 0, str(e)), True
                    continue
                if resp.status_code == 200:
                    return self._verify_manifest(ref, obj, resp)
                last = self._error(ref, resp.status_code, resp.reason_phrase, f"manifest {obj}")
                transient = transient or resp.status_code == 429 or resp.status_code >= 500
                if resp.status_code in (401, 403) and ep == eps[-1]:
                    raise last
            if not transient:
                break
            await asyncio.sleep(min(0.2 * 2**attempt, 5))
        assert last is not None
        raise last

    def _verify_manifest(self, ref: Reference, obj: str, resp: httpx.Response
                         ) -> tuple[str, bytes, str]:
        raw = resp.content
        if len(raw) > MANIFEST_MAX:
            raise RegistryError(str(ref), ref.domain, 0, f"manifest over {MANIFEST_MAX} bytes")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        want = obj if obj.startswith("sha256:") else resp.headers.get("docker-content-digest")
        if want and want != digest:
            raise RegistryError(str(ref), ref.domain, 0,
                                f"manifest digest mismatch: got {digest}, expected {want}")
        mt = json.loads(raw).get("mediaType") or resp.headers.get("content-type", "")
        return mt.split(";")[0].strip(), raw, digest

    async def resolve(self, ref: Reference, auth: Auth | None,
                      want: Platform | None = None) -> Resolved:
        """Fetch what ref names and, for an index, the manifest for this node's platform."""
        want = want or host_platform()
        mt, raw, digest = await self.manifest(ref, ref.object, auth)
        if mt in INDEX_TYPES:
            chosen = choose_platform(json.loads(raw).get("manifests", []), want)
            if chosen is None:
                raise NotFound(str(ref), ref.domain, 404, "Not Found",
                               f"no manifest for platform {want}")
            sub = validate_digest(chosen["digest"])
            mt2, raw2, d2 = await self.manifest(ref, sub, auth)
            p = chosen.get("platform", {})
            plat = Platform(p.get("os", "linux"), p.get("architecture", ""), p.get("variant", ""))
            return Resolved(digest, d2, _check(ref, mt2, raw2), raw2, mt2, plat, raw)
        return Resolved(digest, digest, _check(ref, mt, raw), raw, mt, want)

    def blob_opener(self, ref: Reference, digest: str, auth: Auth | None) -> SyncOpener:
        """A blocking opener of the blob for an unpack thread; auth challenges go to the loop."""
        loop = asyncio.get_running_loop()

        def send(url: str, headers: dict[str, str]) -> blobhttp.Response:
            scope, key = _token_key(ref, url, auth)
            for attempt in range(2):
                try:
                    resp = self.blobs.get(url, self._authed(key, headers))
                except blobhttp.ReadTimeout as e:
                    raise ProgressTimeout(f"no response for {self.config.progress_timeout}s "
                                          f"fetching {digest}") from e
                except blobhttp.TransportError as e:
                    raise Retryable(f"{e} talking to {ref.domain}") from e
                if resp.status != 401 or attempt:
                    return resp
                challenge = resp.headers.get("www-authenticate", "")
                resp.close()
                self._tokens[key] = asyncio.run_coroutine_threadsafe(
                    self._authorize(ref, challenge, scope, auth), loop).result(
                        self.config.progress_timeout)
            raise AssertionError("unreachable")

        def open_at(offset: int) -> tuple[int, ReadInto, Callable[[], None], Callable[[], None]]:
            last: Exception | None = None
            transient = False
            for ep in self.endpoints(ref.domain):
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    resp = send(f"{ep}/v2/{ref.path}/blobs/{digest}", headers)
                except Retryable as e:  # this mirror is down: try the next endpoint
                    last, transient = e, True
                    continue
                if resp.status in (200, 206):
                    start = offset if resp.status == 206 else 0
                    return start, self._reader(resp, ref, digest), resp.close, resp.cut
                resp.close()
                last = self._error(ref, resp.status, resp.reason, f"blob {digest}")
                transient = transient or resp.status == 429 or resp.status >= 500
            if transient:
                raise Retryable(str(last))
            assert last is not None
            raise last

        return open_at

    def _reader(self, resp: blobhttp.Response, ref: Reference, digest: str) -> ReadInto:
        """resp.readinto, its failures in the terms the fetch loop retries on."""

        def readinto(b: memoryview) -> int:
            try:
                return resp.readinto(b)
            except blobhttp.ReadTimeout as e:
                raise ProgressTimeout(f"no byte for {self.config.progress_timeout}s fetching "
                                      f"{digest}") from e
            except blobhttp.TransportError as e:
                raise Retryable(f"{e} from {ref.domain}") from e
        return readinto


def _check(ref: Reference, mt: str, raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw)
    if mt not in MANIFEST_TYPES or doc.get("schemaVersion") != 2:
        raise RegistryError(str(ref), ref.domain, 0, f"unsupported manifest type {mt!r}")
    for d in [doc["config"], *doc.get("layers", [])]:
        validate_digest(d["digest"])
    return doc


def choose_platform(entries: list[dict[str, Any]], want: Platform) -> dict[str, Any] | None:
    """Exact variant first, then any variant of the same os/arch (as containerd's matcher)."""
    same = [e for e in entries
            if e.get("platform", {}).get("os") == want.os
            and e.get("platform", {}).get("architecture") == want.architecture]
    for e in same:
        if e["platform"].get("variant", "") in (want.variant, ""):
            return e
    return same[0] if same else None
