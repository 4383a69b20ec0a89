"""Air-gapped import: OCI image-layout tarballs (oci-archive) and `docker save` tarballs."""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.images.content import DigestMismatch
from runtime.images.records import Image
from runtime.images.reference import normalize
from runtime.images.registry import INDEX_TYPES, MT_DOCKER_MANIFEST, choose_platform, host_platform
from runtime.images.snapshots import chain_ids
from runtime.images.unpack import UnpackError, apply_layer

if TYPE_CHECKING:
    from runtime.images.store import ImageStore

_JSON_MAX = 4 << 20
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class ArchiveError(Exception):
    """The tarball is neither a usable OCI layout nor a docker save archive."""


def _scan(store: ImageStore, path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """One streaming pass: every file goes into the content store; small JSON is kept too."""
    names: dict[str, str] = {}
    links: dict[str, str] = {}
    small: dict[str, bytes] = {}
    with tarfile.open(path, mode="r|*") as tf:
        for m in tf:
            name = posixpath.normpath(m.name.lstrip("/"))
            if m.issym() or m.islnk():
                base = posixpath.dirname(name) if m.issym() else ""
                links[name] = posixpath.normpath(posixpath.join(base, m.linkname.lstrip("/")))
                continue
            if not m.isreg():
                continue
            src = tf.extractfile(m)
            assert src is not None
            if "/" not in name and m.size <= _JSON_MAX and (
                    name.endswith(".json") or name in ("oci-layout", "repositories")):
                small[name] = src.read()
                continue
            expect = None
            if name.startswith("blobs/sha256/"):
                expect = "sha256:" + name.rsplit("/", 1)[1]
            names[name], _size = store.content.put_stream(src, expect)
    for name, target in links.items():
        if target in names:
            names[name] = names[target]
    return names, small


def _blob(store: ImageStore, digest: str) -> bytes:
    if not store.content.has(digest):
        raise ArchiveError(f"archive lacks blob {digest}")
    return store.content.read_bytes(digest)


def _install(store: ImageStore, manifest: dict[str, Any], raw: bytes, tags: list[str],
             digests: list[str], platform: str) -> Image:
    cfg_digest = manifest["config"]["digest"]
    cfg = json.loads(_blob(store, cfg_digest))
    layers = manifest.get("layers", [])
    if len(cfg["rootfs"]["diff_ids"]) != len(layers):
        raise ArchiveError(f"image {cfg_digest}: layer count does not match diff_ids")
    for ly in layers:
        if not store.content.has(ly["digest"]):
            raise ArchiveError(f"archive lacks layer {ly['digest']}")
    mdigest = "sha256:" + hashlib.sha256(raw).hexdigest()
    store.content.put_bytes(mdigest, raw)
    _unpack_blobs(store, layers, cfg["rootfs"]["diff_ids"])
    keep = [*digests, mdigest, cfg_digest, *[ly["digest"] for ly in layers]]
    img = store.make_image(manifest, len(raw), cfg, mdigest, platform, keep)
    return store.record(img, tags, [])


def _oci_name(desc: dict[str, Any]) -> list[str]:
    """A full reference from the annotations; a bare tag names no repository, so no tag."""
    ann = desc.get("annotations", {})
    name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME, "")
    if not name or ("/" not in name and ":" not in name):
        return []
    tagged = normalize(name).tagged()
    return [tagged] if tagged else []


def _oci(store: ImageStore, index: dict[str, Any]) -> list[Image]:
    out: list[Image] = []
    for desc in index.get("manifests", []):
        tags = _oci_name(desc)
        raw = _blob(store, desc["digest"])
        doc = json.loads(raw)
        platform = host_platform()
        if desc.get("mediaType", doc.get("mediaType")) in INDEX_TYPES:
            chosen = choose_platform(doc.get("manifests", []), platform)
            if chosen is None:
                raise ArchiveError(f"no manifest for platform {platform} in {desc['digest']}")
            raw = _blob(store, chosen["digest"])
            doc = json.loads(raw)
        out.append(_install(store, doc, raw, tags, [], str(platform)))
    return out


def _docker(store: ImageStore, names: dict[str, str], entries: list[dict[str, Any]]
            ) -> list[Image]:
    """docker save has no registry manifest: synthesise a Docker v2 one from its parts."""
    out: list[Image] = []
    for e in entries:
        try:
            cfg_digest = names[posixpath.normpath(e["Config"])]
            layer_digests = [names[posixpath.normpath(p)] for p in e["Layers"]]
        except KeyError as err:
            raise ArchiveError(f"docker archive lacks {err}") from None
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "digest": cfg_digest,
                       "size": store.content.path(cfg_digest).stat().st_size},
            "layers": [{"mediaType": MT_DOCKER_LAYER, "digest": d,
                        "size": store.content.path(d).stat().st_size} for d in layer_digests],
        }
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        tags = [t for t in (normalize(x).tagged() for x in e.get("RepoTags") or []) if t]
        out.append(_install(store, manifest, raw, tags, [], str(host_platform())))
    return out


def import_archive(store: ImageStore, path: Path) -> list[Image]:
    """Import every image in the tarball; layers are verified against the configs' diff_ids."""
    before = store.content.list()
    images: list[Image] = []
    try:
        names, small = _scan(store, path)
        if "manifest.json" in small:
            for name, data in small.items():  # legacy docker save keeps configs at the top
                if name != "manifest.json" and name.endswith(".json"):
                    names[name] = store.content.put_stream(io.BytesIO(data))[0]
            images = _docker(store, names, json.loads(small["manifest.json"]))
        elif "index.json" in small:
            images = _oci(store, json.loads(small["index.json"]))
        else:
            raise ArchiveError(f"import {path}: neither index.json nor manifest.json found")
    except (tarfile.TarError, DigestMismatch, UnpackError, OSError, KeyError, ValueError) as e:
        raise ArchiveError(f"import {path}: {e}") from e
    finally:
        # archive files no imported image uses (docker's per-layer json, VERSION...) go again
        used = {d for img in images for d in img.blobs}
        for d in store.content.list() - before - used - store.pinned():
            store.content.delete(d)
    return images


def _unpack_blobs(store: ImageStore, layers: list[dict[str, Any]], diff_ids: list[str]) -> None:
    """Unpack layers already in the content store, in order, skipping present ones."""
    chains = chain_ids(diff_ids)
    for i, ly in enumerate(layers):
        if store.snapshots.has(chains[i]):
            continue
        tmp = store.snapshots.prepare()
        try:
            with open(store.content.path(ly["digest"]), "rb") as f:
                res = apply_layer(f, str(tmp / "fs"), store.snapshots.lowers(chains[:i]),
                                  ly.get("mediaType", ""), store.max_layer_bytes)
            if res.diff_id != diff_ids[i]:
                raise DigestMismatch(f"layer {ly['digest']}: diff id {res.diff_id} "
                                     f"does not match config {diff_ids[i]}")
            if store.sync_snapshots:
                store.snapshots.sync(tmp)
            store.snapshots.measure(tmp, chains[i])
            store.snapshots.commit(tmp, chains[i])
        except BaseException:
            store.snapshots.discard(tmp)
            raise
