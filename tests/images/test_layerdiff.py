"""An upper dir as a layer blob: gzip that round-trips, at the level its content earns."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

from runtime.images.content import ContentStore
from runtime.images.layerdiff import PROBE_BYTES, write_layer


def _layer(upper: Path, store: ContentStore) -> tuple[int, bytes]:
    layer = write_layer(upper, store)
    raw = gzip.decompress(store.path(layer.digest).read_bytes())
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.size == store.path(layer.digest).stat().st_size
    return layer.size, raw


def test_incompressible_layers_are_stored_and_text_is_compressed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    rng = random.Random(7)
    noise, text = tmp_path / "noise", tmp_path / "text"
    (noise / "d").mkdir(parents=True)
    (text / "d").mkdir(parents=True)
    blob = rng.randbytes(PROBE_BYTES + (1 << 20))
    (noise / "d" / "blob").write_bytes(blob)
    words = [f"word{rng.randrange(500)}" for _ in range(1_200_000)]
    (text / "d" / "words.txt").write_text(" ".join(words))
    os.chmod(text / "d" / "words.txt", 0o640)

    size, raw = _layer(noise, store)
    assert len(blob) < size < len(blob) * 1.01  # stored: no deflate growth, a little framing
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        member = tf.extractfile("d/blob")
        assert member is not None and member.read() == blob

    size, raw = _layer(text, store)
    assert size < (text / "d" / "words.txt").stat().st_size / 2  # level 1, not stored
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert tf.getmember("d/words.txt").mode == 0o640
