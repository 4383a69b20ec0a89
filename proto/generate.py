"""Regenerate (or verify) the Python stubs for proto/api.proto.

Run from the repository root as ``python -m proto.generate [--check]``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO = "proto/api.proto"
OUTPUTS = ("proto/api_pb2.py", "proto/api_pb2_grpc.py", "proto/api_pb2.pyi")


def generate(out_dir: Path) -> None:
    """Run protoc with the repo root as include path so imports read `from proto import ...`."""
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(REPO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTO}")


def stale_outputs() -> list[str]:
    """Stubs whose committed content differs from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="berth-proto-") as tmp:
        generate(Path(tmp))
        return [
            rel
            for rel in OUTPUTS
            if not (REPO_ROOT / rel).is_file()
            or not filecmp.cmp(Path(tmp) / rel, REPO_ROOT / rel, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed stubs are stale"
    )
    ns = parser.parse_args(argv)
    if ns.check:
        stale = stale_outputs()
        for rel in stale:
            print(f"stale: {rel} (run `python -m proto.generate`)", file=sys.stderr)
        return 1 if stale else 0
    with tempfile.TemporaryDirectory(prefix="berth-proto-") as tmp:
        generate(Path(tmp))
        for rel in OUTPUTS:
            shutil.copyfile(Path(tmp) / rel, REPO_ROOT / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
