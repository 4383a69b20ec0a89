"""SPDY/3.1 framing: byte layouts, header compression and the incremental parser."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cri.streaming import spdy


def test_dictionary_is_the_spdy3_one() -> None:
    d = spdy.DICTIONARY
    assert len(d) == 1423
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert b"\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1" in d
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_known_frame_bytes() -> None:
    assert spdy.data(1, b"hi", fin=True) == b"\x00\x00\x00\x01\x01\x00\x00\x02hi"
    assert spdy.ping(7) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x07"
    assert spdy.rst_stream(3, 5) == (b"\x80\x03\x00\x03\x00\x00\x00\x08"
                                     b"\x00\x00\x00\x03\x00\x00\x00\x05")
    assert spdy.goaway(9) == b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00\x00"


def test_headers_round_trip_across_frames() -> None:
    """One zlib stream per direction: later blocks only decode after the earlier ones."""
    z, parser = spdy.HeaderCompressor(), spdy.FrameParser()
    blob = b"".join(spdy.syn_stream(z, i, {"streamtype": ["stdout"], "port": ["80"],
                                          "multi": ["a", "b"]}) for i in (1, 3, 5))
    blob += spdy.syn_reply(z, 2, {"X-Mixed-Case": ["v"]}, fin=True)
    frames = parser.feed(blob)
    assert [f.stream_id for f in frames] == [1, 3, 5, 2]  # type: ignore[union-attr]
    first = frames[0]
    assert isinstance(first, spdy.SynStream) and not first.fin
    assert first.headers == {"streamtype": ["stdout"], "port": ["80"], "multi": ["a", "b"]}
    last = frames[-1]
    assert isinstance(last, spdy.SynReply) and last.fin and last.headers == {"x-mixed-case": ["v"]}


def test_compressed_block_inflates_with_a_plain_zlib_and_the_dictionary() -> None:
    """What a Go peer does: zlib.NewReaderDict with a full 32 KiB window."""
    frame = spdy.syn_reply(spdy.HeaderCompressor(), 1, {"a": ["b"]})
    raw = zlib.decompressobj(wbits=15, zdict=spdy.DICTIONARY).decompress(frame[12:])
    assert raw == struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 1) + b"b"


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 64))
def test_parser_any_chunking(payloads: list[bytes], step: int) -> None:
    z = spdy.HeaderCompressor()
    blob = spdy.syn_stream(z, 1, {"k": ["v"]}) + spdy.settings([(0, 4, 100)])
    blob += b"".join(spdy.data(1, p, fin=i == len(payloads) - 1) for i, p in enumerate(payloads))
    blob += spdy.window_update(1, 10) + spdy.ping(2)
    parser, frames = spdy.FrameParser(), []
    for i in range(0, len(blob), step):
        frames += parser.feed(blob[i : i + step])
    assert isinstance(frames[0], spdy.SynStream)
    assert frames[1] == spdy.Settings([(0, 4, 100)])
    assert [f.data for f in frames[2:-2]] == payloads  # type: ignore[union-attr]
    assert frames[-2:] == [spdy.WindowUpdate(1, 10), spdy.Ping(2)]


def test_oversized_frame_is_refused_before_buffering() -> None:
    with pytest.raises(spdy.ProtocolError, match="exceeds"):
        spdy.FrameParser(max_frame=1024).feed(struct.pack(">II", 1, 2048))


def test_header_bomb_is_refused() -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    block = z.compress(b"\0" * (spdy.MAX_HEADER_BLOCK * 4)) + z.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack(">HHI", 0x8003, spdy.SYN_REPLY, 4 + len(block)) + b"\0\0\0\1" + block
    with pytest.raises(spdy.ProtocolError, match="too large"):
        spdy.FrameParser().feed(frame)


def test_wrong_version_and_garbage_headers() -> None:
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.FrameParser().feed(struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1")
    frame = struct.pack(">HHI", 0x8003, spdy.SYN_REPLY, 8) + b"\0\0\0\1notzlib!"
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameParser().feed(frame)


def test_unknown_control_frames_are_skipped() -> None:
    frames = spdy.FrameParser().feed(struct.pack(">HHI", 0x8003, 0x55, 2) + b"xx"
                                     + spdy.ping(1))
    assert frames == [spdy.Ping(1)]
