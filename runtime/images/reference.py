"""Image reference parsing and normalisation, following the Docker/containerd grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A fully qualified reference; tag and digest may both be set."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Repository name with its registry, e.g. docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to fetch from the registry: the digest wins over the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def tagged(self) -> str | None:
        """`name:tag` form recorded as a repo tag, if a tag is present."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> str:
        """`name@digest` form recorded as a repo digest."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def validate_digest(digest: str) -> str:
    """Check a digest string; sha256 digests must be 64 lowercase hex chars."""
    if not _DIGEST_RE.match(digest):
        raise ValueError(f"invalid digest {digest!r}: bad format")
    algo, _, hexpart = digest.partition(":")
    if algo == "sha256" and not _HEX64_RE.match(hexpart):
        raise ValueError(f"invalid digest {digest!r}: sha256 needs 64 lowercase hex characters")
    if algo not in ("sha256", "sha512"):
        raise ValueError(f"invalid digest {digest!r}: unsupported algorithm {algo!r}")
    if algo == "sha512" and not re.match(r"^[a-f0-9]{128}$", hexpart):
        raise ValueError(f"invalid digest {digest!r}: sha512 needs 128 lowercase hex characters")
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry only if it looks like a host."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(ref: str) -> Reference:
    """Parse a possibly familiar reference into a fully qualified one (no default tag)."""
    if not ref:
        raise ValueError("invalid reference: empty string")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise ValueError(f"invalid reference {ref!r}: contains whitespace")
    if _HEX64_RE.match(ref):
        raise ValueError(f"invalid reference {ref!r}: cannot specify 64-byte hexadecimal strings")
    remainder, digest = ref, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        validate_digest(digest)
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ValueError(f"invalid reference {ref!r}: invalid tag {tag!r}")
    if not remainder:
        raise ValueError(f"invalid reference {ref!r}: empty repository name")
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"invalid reference {ref!r}: invalid registry host {domain!r}")
    if path.lower() != path:
        raise ValueError(f"invalid reference {ref!r}: repository name must be lowercase")
    if not _PATH_RE.match(path):
        raise ValueError(f"invalid reference {ref!r}: invalid repository path {path!r}")
    if len(remainder) > NAME_MAX:
        raise ValueError(f"invalid reference {ref!r}: repository name longer than {NAME_MAX}")
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(ref: str) -> Reference:
    """Parse and add the default tag when neither a tag nor a digest is given."""
    r = parse(ref)
    if r.tag is None and r.digest is None:
        r = Reference(r.domain, r.path, DEFAULT_TAG, None)
    return r


def familiar(ref: Reference) -> str:
    """Short Docker-style form (busybox:latest) for messages."""
    name = ref.path.removeprefix(OFFICIAL_PREFIX) if ref.domain == DEFAULT_DOMAIN else ref.name
    return name + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
