"""What a test can see of downloads in progress: files in ingest/ come and go under it."""

from __future__ import annotations

import stat
from pathlib import Path


def size(p: Path) -> int:
    """The size of regular file p; 0 once it is gone (a finished download is renamed out of
    ingest/ between a listing and the stat) or if it is not a regular file."""
    try:
        st = p.lstat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def ingesting(ingest: Path, over: int = 1 << 20) -> bool:
    """A download in ingest/ is past `over` bytes."""
    return ingest.is_dir() and any(size(p) > over for p in ingest.iterdir())
