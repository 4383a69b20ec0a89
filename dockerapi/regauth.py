"""Registry credentials as Docker clients send them: X-Registry-Auth (one registry, pulls and
pushes) and X-Registry-Config (a map of registries, builds), both base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from engine.errors import InvalidArgument
from runtime.images.registry import Auth

MAX_HEADER = 64 << 10


def _decoded(request: web.Request, header: str) -> Any:
    raw = request.headers.get(header, "")
    if not raw:
        return None
    if len(raw) > MAX_HEADER:
        raise InvalidArgument(f"{header} header is too large")
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidArgument(f"{header} is not base64url-encoded JSON") from None


def _auth(data: dict[str, Any]) -> Auth:
    return Auth(username=str(data.get("username") or ""),
                password=str(data.get("password") or ""), auth=str(data.get("auth") or ""),
                server_address=str(data.get("serveraddress") or ""),
                identity_token=str(data.get("identitytoken") or ""),
                registry_token=str(data.get("registrytoken") or ""))


def registry_auth(request: web.Request) -> Auth | None:
    """X-Registry-Auth: username/password (or a token) for the one registry of a pull or push."""
    data = _decoded(request, "X-Registry-Auth")
    return _auth(data) if isinstance(data, dict) and data else None


def registry_config(request: web.Request) -> dict[str, Auth]:
    """X-Registry-Config: {registry: credentials}, for the base images a build pulls."""
    data = _decoded(request, "X-Registry-Config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument("X-Registry-Config must be a JSON object")
    return {str(host).removeprefix("https://").removeprefix("http://").split("/")[0]: _auth(a)
            for host, a in data.items() if isinstance(a, dict)}
