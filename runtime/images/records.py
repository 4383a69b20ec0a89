"""Image records and their persistence (one JSON file, atomic writes; sqlite can replace it)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ImageConfig:
    """The runtime part of an image config that CRI and container creation need."""

    user: str = ""
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def uid_username(self) -> tuple[int | None, str]:
        """CRI ImageStatus reports a numeric user as uid and a name as username (group dropped)."""
        user = self.user.split(":", 1)[0]
        if user.isdigit():
            return int(user), ""
        return None, user

    @classmethod
    def from_oci(cls, doc: dict[str, Any]) -> ImageConfig:
        """Pick fields out of an OCI/Docker image config blob (absent keys are null there)."""
        c = doc.get("config") or {}
        return cls(
            user=c.get("User") or "",
            env=list(c.get("Env") or []),
            entrypoint=list(c.get("Entrypoint") or []),
            cmd=list(c.get("Cmd") or []),
            workdir=c.get("WorkingDir") or "",
            stop_signal=c.get("StopSignal") or "",
            volumes=sorted(c.get("Volumes") or {}),
            exposed_ports=sorted(c.get("ExposedPorts") or {}),
            labels=dict(c.get("Labels") or {}),
        )


@dataclass
class Image:
    """One image as the CRI image service reports it; id is the config digest."""

    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: ImageConfig
    manifest_digest: str
    platform: str
    layers: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the index file."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Image:
        """Inverse of to_json."""
        return cls(**{**d, "config": ImageConfig(**d["config"])})


class ImageIndex:
    """All image records in `<dir>/images.json`, replaced atomically on every change."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "images.json"
        self._lock = threading.Lock()
        self.images: dict[str, Image] = {}
        if self.path.exists():
            doc = json.loads(self.path.read_text())
            self.images = {i["id"]: Image.from_json(i) for i in doc.get("images", [])}
        for p in directory.glob(".images.json.*"):
            p.unlink()

    def save(self) -> None:
        """Write, fsync, rename: a crash leaves either the old or the new index."""
        with self._lock:
            doc = {"version": 1, "images": [i.to_json() for i in self.images.values()]}
            tmp = self.path.with_name(f".images.json.{uuid.uuid4().hex}")
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
