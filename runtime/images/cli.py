"""`python -m runtime.images.cli import FILE --state-dir DIR`: load images on air-gapped nodes."""

from __future__ import annotations

import argparse
import sys

from runtime.images.archive import ArchiveError
from runtime.images.store import ImageStore


def main(argv: list[str] | None = None) -> int:
    """Import, list or remove images in a state dir without the daemon."""
    ap = argparse.ArgumentParser(prog="python -m runtime.images.cli")
    sub = ap.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="import an OCI layout tar or a docker save tarball")
    imp.add_argument("file")
    imp.add_argument("--state-dir", required=True)
    ls = sub.add_parser("list", help="list images")
    ls.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    store = ImageStore(args.state_dir)
    if args.cmd == "import":
        try:
            images = store.import_archive(args.file)
        except ArchiveError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    else:
        images = store.list()
    for img in images:
        print(img.id, " ".join(img.repo_tags) or "<untagged>", img.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
