"""The build cache: step key → the image state after that step, kept across restarts.

A key is the digest of what the step starts from (its parent's config, layers and base image),
the instruction as expanded, and the digest of any files it copies. An entry is only a hit while
every layer it names still has its blob and snapshot: removing images lets GC take those, and the
step then simply runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from engine.imagebuild.image import BuildImage

if TYPE_CHECKING:
    from runtime.images.store import ImageStore

MAX_ENTRIES = 10_000  # oldest entries go first beyond this


def step_key(parent: BuildImage, instruction: str, extra: str = "") -> str:
    raw = json.dumps([parent.fingerprint(), instruction, extra])
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


class BuildCache:
    """`<dir>/cache.json`, rewritten atomically at the end of every build that added entries."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "cache.json"
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, object]] = {}
        self._dirty = False
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except ValueError:  # a torn file from an older crash: start empty
                self.entries = {}

    def get(self, key: str, store: ImageStore) -> BuildImage | None:
        with self._lock:
            raw = self.entries.get(key)
        if raw is None:
            return None
        state = BuildImage.from_json(raw)  # type: ignore[arg-type]
        if not all(store.content.has(d) for d, _ in state.layers):
            return None
        if not all(store.snapshots.has(c) for c in state.chain_ids()):
            return None
        return state

    def put(self, key: str, state: BuildImage) -> None:
        """In memory; `save` writes the file once per build, not once per step."""
        with self._lock:
            self.entries[key] = state.to_json()  # type: ignore[assignment]
            while len(self.entries) > MAX_ENTRIES:
                del self.entries[next(iter(self.entries))]
            self._dirty = True

    def save(self) -> None:
        """Write, fsync, rename, if anything changed (blocking)."""
        with self._lock:
            if not self._dirty:
                return
            tmp = self.path.with_name(f".cache.json.{uuid.uuid4().hex}")
            with open(tmp, "w") as f:
                json.dump(self.entries, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            self._dirty = False
