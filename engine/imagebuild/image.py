"""A build stage's image as it grows: config, layers and history; committed as a Docker v2 image.

Built images use Docker's schema 2 media types, as dockerd 20.10's classic builder does, so any
registry and any runtime take them. The image ID is the config digest: a rebuild that hits the
cache for every step reproduces the same config bytes, hence the same ID.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.images.layerdiff import MT_DOCKER_LAYER
from runtime.images.records import Image
from runtime.images.registry import MT_DOCKER_MANIFEST, host_platform
from runtime.images.snapshots import chain_ids

if TYPE_CHECKING:
    from runtime.images.store import ImageStore

MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


@dataclass
class BuildImage:
    """Everything a step reads or changes; `to_json` is the cache's record of a step's result."""

    config: dict[str, Any] = field(default_factory=dict)  # the image config's "config" part
    diff_ids: list[str] = field(default_factory=list)
    layers: list[tuple[str, int]] = field(default_factory=list)  # (blob digest, size)
    history: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    base_id: str = ""  # the FROM image's id ("" for scratch)

    @classmethod
    def from_image(cls, store: ImageStore, img: Image) -> BuildImage:
        """Start a stage from a stored image: its config, layers and history carry over."""
        doc = store.config(img.id)
        sizes = _layer_sizes(store, img)
        return cls(config=copy.deepcopy(doc.get("config") or {}), diff_ids=list(img.diff_ids),
                   layers=list(zip(img.layers, sizes, strict=True)),
                   history=list(doc.get("history") or []), created=doc.get("created", ""),
                   base_id=img.id)

    def to_json(self) -> dict[str, Any]:
        return {"config": copy.deepcopy(self.config), "diff_ids": self.diff_ids,
                "layers": [list(x) for x in self.layers], "history": self.history,
                "created": self.created, "base_id": self.base_id}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BuildImage:
        """A deep copy: steps change their state in place, never a cached one."""
        d = copy.deepcopy(d)
        return cls(config=d["config"], diff_ids=list(d["diff_ids"]),
                   layers=[(x[0], int(x[1])) for x in d["layers"]], history=list(d["history"]),
                   created=d["created"], base_id=d.get("base_id", ""))

    def fingerprint(self) -> str:
        """What the next step starts from, as one digest (a cache key's first part)."""
        raw = json.dumps([self.config, self.diff_ids, self.base_id], sort_keys=True)
        return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()

    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    def step(self, created_by: str, empty_layer: bool) -> None:
        """Record a history entry, as `docker history` lists it."""
        self.created = _now()
        entry: dict[str, Any] = {"created": self.created, "created_by": created_by}
        if empty_layer:
            entry["empty_layer"] = True
        self.history.append(entry)

    def config_blob(self) -> bytes:
        plat = host_platform()
        doc: dict[str, Any] = {
            "architecture": plat.architecture, "os": plat.os,
            "config": self.config, "created": self.created or _now(),
            "history": self.history,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
        }
        if plat.variant:
            doc["variant"] = plat.variant
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def commit(self, store: ImageStore, tags: list[str]) -> Image:
        """Store config and manifest blobs and record the image under tags (blocking)."""
        cfg_raw = self.config_blob()
        cfg_digest = "sha256:" + hashlib.sha256(cfg_raw).hexdigest()
        manifest = {
            "schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "size": len(cfg_raw),
                       "digest": cfg_digest},
            "layers": [{"mediaType": MT_DOCKER_LAYER, "size": size, "digest": d}
                       for d, size in self.layers],
        }
        man_raw = json.dumps(manifest, indent=3).encode()
        man_digest = "sha256:" + hashlib.sha256(man_raw).hexdigest()
        store.content.put_bytes(cfg_digest, cfg_raw)
        store.content.put_bytes(man_digest, man_raw)
        img = store.make_image(manifest, len(man_raw), json.loads(cfg_raw), man_digest,
                               str(host_platform()),
                               [man_digest, cfg_digest, *(d for d, _ in self.layers)])
        return store.record(img, tags, [])


def _layer_sizes(store: ImageStore, img: Image) -> list[int]:
    """Compressed sizes from the stored manifest (the push and the next manifest need them)."""
    man = json.loads(store.content.read_bytes(img.manifest_digest))
    return [int(layer["size"]) for layer in man.get("layers", [])]
