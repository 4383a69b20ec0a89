"""Build the e2e test images and push them to a registry (for bench/ and manual runs)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.images import DEFAULT_CACHE, IMAGES, push_images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Push images and print one `name ref digest` line each."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", required=True, help="host:port of a plain-http registry")
    ap.add_argument("--only", action="append", choices=sorted(IMAGES), help="repeatable")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--creds", help="USER:PASSWORD for an authenticated registry")
    args = ap.parse_args(argv)
    start = time.monotonic()
    pushed = push_images(args.registry, args.only, args.cache, args.creds)
    for img in pushed.values():
        print(img.name, img.ref, img.digest)
    print(f"done in {time.monotonic() - start:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
