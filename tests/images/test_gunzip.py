"""gzip layers through zlib-ng's reader: members, padding, and every kind of corruption refused."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest

from runtime.images.unpack import UnpackError, unpack_detached
from tests.images.tarkit import Layer

BODY = os.urandom(3 << 20)  # more than one inflate buffer
TAR = Layer().dir("d").file("d/f", BODY).file("g", b"small").bytes()


def _unpack(tmp: Path, data: bytes) -> Path:
    root = tmp / "fs"
    root.mkdir()
    d = unpack_detached(io.BytesIO(data), str(root), "application/vnd.oci.image.layer.v1.tar+gzip")
    d.applier.close()
    return root


def test_members_padded_with_zeros_make_one_layer(tmp_path: Path) -> None:
    half = len(TAR) // 2
    data = gzip.compress(TAR[:half]) + b"\0" * 1000 + gzip.compress(TAR[half:]) + b"\0" * 7
    root = _unpack(tmp_path, data)
    assert (root / "d" / "f").read_bytes() == BODY and (root / "g").read_bytes() == b"small"


@pytest.mark.parametrize("how", ["crc", "length", "block", "garbage after", "truncated"])
def test_a_corrupt_member_is_refused(tmp_path: Path, how: str) -> None:
    data = bytearray(gzip.compress(TAR, compresslevel=1))
    if how == "crc":
        data[-8] ^= 1
    elif how == "length":
        data[-1] ^= 1
    elif how == "block":
        data[200] ^= 0xFF
    elif how == "garbage after":
        data += b"not gzip"
    else:
        del data[-100:]
    with pytest.raises(UnpackError, match="corrupt layer"):
        _unpack(tmp_path, bytes(data))
