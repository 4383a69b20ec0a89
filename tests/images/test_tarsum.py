"""The C-speed tar header checksum gives the stdlib's two sums, and tarfile still checks them."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.images import tarsum
from runtime.images.unpack import UnpackError, apply_layer


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=512, max_size=512))
def test_same_sums_as_the_stdlib(block: bytes) -> None:
    assert tarsum.calc_chksums(block) == tarsum._STDLIB(block)


@pytest.mark.parametrize("fill", [0, 0x20, 0x7F, 0x80, 0xFF])
def test_extreme_blocks(fill: int) -> None:
    """All-high bytes give the largest sums each adler32 span must still hold exactly."""
    block = bytes([fill]) * 512
    assert tarsum.calc_chksums(block) == tarsum._STDLIB(block)


def test_one_high_byte_anywhere() -> None:
    rnd = random.Random(7)
    for pos in range(512):
        b = bytearray(rnd.choice(b"0123456789abc \0") for _ in range(512))
        b[pos] = rnd.randrange(128, 256)
        assert tarsum.calc_chksums(bytes(b)) == tarsum._STDLIB(bytes(b))


def test_other_inputs_go_to_the_stdlib() -> None:
    """A longer buffer or a bytearray is summed over its first 512 bytes, as before; a short
    one fails as the stdlib's struct.unpack_from does."""
    long = bytes(range(256)) * 3
    assert tarsum.calc_chksums(long) == tarsum._STDLIB(long)
    assert tarsum.calc_chksums(bytearray(long[:512])) == tarsum._STDLIB(long[:512])
    with pytest.raises(Exception) as got:
        tarsum.calc_chksums(b"x" * 100)
    with pytest.raises(type(got.value)):
        tarsum._STDLIB(b"x" * 100)


def _tar(name: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    return out.getvalue()


def test_non_ascii_name_unpacks(tmp_path) -> None:
    """A header with bytes over 127 (a UTF-8 name) passes the check in the installed path."""
    assert tarfile.calc_chksums is tarsum.calc_chksums  # type: ignore[attr-defined]
    (tmp_path / "root").mkdir()
    apply_layer(io.BytesIO(_tar("caf\u00e9.txt")), str(tmp_path / "root"), [])
    assert (tmp_path / "root" / "caf\u00e9.txt").read_bytes() == b"hi"


def test_bad_checksum_still_refused(tmp_path) -> None:
    raw = bytearray(_tar("a.txt"))
    raw[0] ^= 1  # the name changes, the stored checksum does not
    (tmp_path / "root").mkdir()
    with pytest.raises(UnpackError):
        apply_layer(io.BytesIO(bytes(raw)), str(tmp_path / "root"), [])
    assert list((tmp_path / "root").iterdir()) == []
