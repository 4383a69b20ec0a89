"""tarfile's header checksum computed in C: the same two sums, a tenth of the cost.

The stdlib's `tarfile.calc_chksums` sums a header as 504 one-byte fields unpacked by `struct`
into a tuple, twice (unsigned, then signed for old Sun tars): about 10 us of the 15 us that
`TarInfo.frombuf` takes per header, and the largest single Python cost of unpacking a layer of
small files (py-spy of berthd holding the GIL during a cold pull of 30,000 files: a fifth of all
samples). `install()` swaps in this module's function, which gives the same two numbers from
zlib's adler32: its low half is 1 plus the byte sum modulo 65521, exact for a span of at most
256 bytes, so three spans cover the header without the checksum field. The signed sum differs
only by 256 per byte of 128 or more, counted in C too (none at all in an ASCII header).
tarfile's parsing is not touched: it still reads every field and compares the checksums itself.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable
from typing import Any

_STDLIB: Callable[[Any], tuple[int, int]] = tarfile.calc_chksums  # type: ignore[attr-defined]
_HIGH = bytes(range(128, 256))
_BLOCK = tarfile.BLOCKSIZE  # the checksum field is bytes 148-155 of it


def calc_chksums(buf: Any) -> tuple[int, int]:
    """(unsigned, signed) checksum of a 512-byte header, its checksum field read as spaces."""
    if type(buf) is not bytes or len(buf) != _BLOCK:
        return _STDLIB(buf)  # anything but tarfile's own 512-byte header: the stdlib's way
    head, mid, tail = buf[:148], buf[156:334], buf[334:]
    unsigned = (256 - 3 + (zlib.adler32(head) & 0xFFFF) + (zlib.adler32(mid) & 0xFFFF)
                + (zlib.adler32(tail) & 0xFFFF))
    if buf.isascii():
        return unsigned, unsigned
    high = (len(head) - len(head.translate(None, _HIGH)) + len(mid)
            - len(mid.translate(None, _HIGH)) + len(tail) - len(tail.translate(None, _HIGH)))
    return unsigned, unsigned - 256 * high


def install() -> None:
    """Make tarfile use calc_chksums (it looks the name up in its module on every header)."""
    tarfile.calc_chksums = calc_chksums  # type: ignore[attr-defined]
