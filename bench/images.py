"""Bench images of real shapes, built deterministically with no public content.

- `python`: busybox plus ~30,000 files of 1-50 KB (most of them small, as in a real
  site-packages) in a site-packages-shaped tree over 10 layers: source-like text that gzip
  shrinks about as much as real Python, plus a few compiled-looking binary files per package.
- `model`: busybox, a small runtime layer, and two weight files of 240 and 320 MiB of
  incompressible bytes, one layer each (as `COPY model.bin` makes them).
- `fleet`: 50 distinct images (tags f0..f49) of busybox plus 4,000 site-packages files each,
  200,000 files in all: a node's image store for the stats-pressure bench.

Layouts are cached under `/var/cache/berth-bench-images/<hash of this file and busybox>/`
(`BERTH_BENCH_IMAGE_CACHE` overrides) and pushed with skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from tests.fixtures import image_defs as defs
from tests.fixtures.oci import EPOCH, MT_LAYER_GZIP, Layout

CACHE = Path(os.environ.get("BERTH_BENCH_IMAGE_CACHE", "/var/cache/berth-bench-images"))
PY_FILES, PY_LAYERS = 30_000, 10
WEIGHTS_MIB = (240, 320)
FLEET, FLEET_FILES = 50, 4_000
_WORDS = ("self", "return", "def", "import", "from", "class", "if", "else", "elif", "for",
          "in", "not", "None", "True", "False", "value", "result", "config", "data", "items",
          "key", "name", "path", "args", "kwargs", "options", "handler", "request", "response",
          "buffer", "offset", "length", "index", "module", "registry", "context", "state")


class _Hashing:
    """A write-only file that hashes what passes through it (the layer's diff_id)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.h = out, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.out.write(b)


def _text_corpus(seed: int, size: int) -> bytes:
    """Python-looking lines to slice file bodies from: compresses like source does."""
    rnd = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        depth = rnd.randrange(0, 4) * 4
        words = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randrange(2, 10)))
        line = f"{' ' * depth}{words}_{rnd.randrange(1000)}({rnd.randrange(100)})\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _file_size(rnd: random.Random) -> int:
    """1-50 KB, skewed small: most of site-packages is small modules."""
    r = rnd.random()
    hi = 8_000 if r < 0.6 else 25_000 if r < 0.9 else 50_000
    return rnd.randrange(1_000, hi)


Member = tuple[tarfile.TarInfo, Callable[[], Iterator[bytes]] | None]


Built = tuple[str, str]  # a layer blob in the layout: (diff_id, hex digest of the blob)


def _write_layer(lay: Layout, members: Iterator[Member], level: int) -> Built:
    """Stream members into a gzip blob in the layout."""
    blobs = lay.root / "blobs" / "sha256"
    tmp = blobs / ".tmp-layer"
    with open(tmp, "wb") as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)
        diff = _Hashing(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=diff, mode="w|",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT) as tar:
            for info, body in members:
                info.mtime, info.uname, info.gname = EPOCH, "", ""
                tar.addfile(info, _Chunks(body()) if body else None)
        gz.close()
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.rename(tmp, blobs / digest)
    return "sha256:" + diff.h.hexdigest(), digest


class _Chunks:
    """A read()-able over an iterator of byte chunks, for tarfile.addfile."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self.it, self.buf = it, b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.it)
            except StopIteration:
                break
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def _dir(name: str) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti, None


def _file(name: str, data: bytes, mode: int = 0o644) -> Member:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    return ti, lambda: iter([data])


def _site_packages(layer: int, count: int, corpus: bytes) -> Iterator[Member]:
    """Packages of 20-200 modules in subpackages, with __init__.py and a few .so-like blobs."""
    rnd = random.Random(1000 + layer)
    root = "usr/lib/python3.11/site-packages"
    if layer == 0:
        yield from (_dir(d) for d in ("usr/lib", "usr/lib/python3.11", root))
    made = 0
    pkg = 0
    while made < count:
        name = f"{root}/pkg{layer:02d}_{pkg:03d}"
        yield _dir(name)
        for sub in range(rnd.randrange(1, 6)):
            d = f"{name}/sub{sub}"
            yield _dir(d)
            for m in range(rnd.randrange(4, 40)):
                if made >= count:
                    return
                size = _file_size(rnd)
                at = rnd.randrange(0, len(corpus) - size)
                header = f"# {d}/mod{m}.py {layer}.{pkg}.{sub}.{m}\n".encode()
                if m % 17 == 16:  # an extension module: random bytes, barely compressible
                    yield _file(f"{d}/_ext{m}.so", rnd.randbytes(size), 0o755)
                else:
                    yield _file(f"{d}/mod{m}.py", header + corpus[at:at + size])
                made += 1
        yield _file(f"{name}/__init__.py", b"")
        made += 1
        pkg += 1


def _weights(i: int, mib: int) -> Iterator[Member]:
    ti = tarfile.TarInfo(f"models/weights-{i}.bin")
    ti.size, ti.mode = mib << 20, 0o644
    rnd = random.Random(5000 + i)
    yield _dir("models")
    yield ti, lambda: (rnd.randbytes(1 << 20) for _ in range(mib))


def _busybox_blob(lay: Layout) -> Built:
    b = defs.busybox_layer()
    return b.diff_id, lay.put(b.data, MT_LAYER_GZIP)["digest"][7:]


def _image(lay: Layout, layers: list[Built], tag: str) -> None:
    """Config, manifest and tag for layer blobs already in the layout."""
    blobs = lay.root / "blobs" / "sha256"
    cfg = {"created": "2023-11-14T22:13:20Z", "architecture": "amd64", "os": "linux",
           "config": defs.base_config(),
           "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": lay.put(json.dumps(cfg, sort_keys=True).encode(),
                                  "application/vnd.oci.image.config.v1+json"),
                "layers": [{"mediaType": MT_LAYER_GZIP, "digest": f"sha256:{h}",
                            "size": (blobs / h).stat().st_size} for _, h in layers]}
    top = lay.put(json.dumps(manifest, sort_keys=True).encode(),
                  "application/vnd.oci.image.manifest.v1+json")
    lay.tag(top, tag)


def build_python(lay: Layout) -> None:
    corpus = _text_corpus(7, 4 << 20)
    per = PY_FILES // PY_LAYERS
    layers = [_busybox_blob(lay)]
    layers += [_write_layer(lay, _site_packages(n, per, corpus), 6) for n in range(PY_LAYERS)]
    _image(lay, layers, "v1")


def build_model(lay: Layout) -> None:
    corpus = _text_corpus(8, 1 << 20)
    layers = [_busybox_blob(lay), _write_layer(lay, _site_packages(99, 300, corpus), 6)]
    layers += [_write_layer(lay, _weights(i, mib), 1) for i, mib in enumerate(WEIGHTS_MIB)]
    _image(lay, layers, "v1")


def build_fleet(lay: Layout) -> None:
    """FLEET images of FLEET_FILES site-packages files each, one layer over busybox, tagged
    f0..f49: a node's worth of distinct images for the stats-pressure bench."""
    corpus = _text_corpus(9, 1 << 20)
    base = _busybox_blob(lay)
    for i in range(FLEET):
        dirs = (_dir(d) for d in ("usr/lib", "usr/lib/python3.11",
                                  "usr/lib/python3.11/site-packages"))
        layer = _write_layer(lay, itertools.chain(dirs, _site_packages(100 + i, FLEET_FILES,
                                                                        corpus)), 1)
        _image(lay, [base, layer], f"f{i}")


BUILDERS: dict[str, Callable[[Layout], None]] = {"python": build_python, "model": build_model,
                                                 "fleet": build_fleet}


def _key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(hashlib.sha256(defs.BUSYBOX.read_bytes()).digest())
    return h.hexdigest()[:16]


def layout(name: str) -> Path:
    """The cached layout of a bench image, built (atomically) when missing."""
    final = CACHE / _key() / name
    if not (final / "index.json").exists():
        tmp = final.with_name(f".tmp-{name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        BUILDERS[name](Layout(tmp))
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    return final


def push(name: str, host: str, tag: str = "v1") -> str:
    """Push a bench image into the loopback registry; returns its reference."""
    ref = f"{host}/bench/{name}:{tag}"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{layout(name)}:{tag}", f"docker://{ref}"], check=True, timeout=1800)
    return ref


def describe(name: str) -> dict[str, Any]:
    """Files, layers and bytes of a built layout, for the report."""
    lay = layout(name)
    blobs = lay / "blobs" / "sha256"
    top = json.loads((lay / "index.json").read_text())["manifests"][0]["digest"][7:]
    manifest = json.loads((blobs / top).read_text())
    return {"layers": len(manifest["layers"]),
            "compressed_mib": round(sum(ly["size"] for ly in manifest["layers"]) / 2**20, 1)}
