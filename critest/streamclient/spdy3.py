"""critest's own SPDY/3.1 client session, written from the SPDY/3 draft (draft-mbelshe-httpbis-
spdy-00) apart from the server's framing in cri/streaming/: the suite must not share a reading
of the protocol with the code it checks. No maintained Python SPDY library exists.

Client side only: SYN_STREAM out / SYN_REPLY in, DATA both ways with FIN half-close,
RST_STREAM, PING echo, GOAWAY, zlib header blocks with the spec's dictionary (one context per
direction).

No WINDOW_UPDATE, as client-go's spdystream sends none (moby/spdystream never writes one, and
neither it nor Berth holds its sending to a window). Sending them was worse than useless: a
WINDOW_UPDATE for the output we had just read reaches a server that has already closed its socket
after the exit status (containerd does), the server's kernel answers with a reset, and a reset
makes our kernel drop the status frame before we have read it (seen once in CI: exit code None).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections import deque

# The spec's header compression dictionary (section 2.6.10.1), its byte table as hex. containerd's
# Go peer inflates with its own copy, so every critest run against it checks these bytes.
SPDY3_DICTIONARY = bytes.fromhex(
    "000000076f7074696f6e73000000046865616400000004706f7374000000037075740000000664656c65746500000005"
    "7472616365000000066163636570740000000e6163636570742d636861727365740000000f6163636570742d656e636f"
    "64696e670000000f6163636570742d6c616e67756167650000000d6163636570742d72616e6765730000000361676500"
    "000005616c6c6f770000000d617574686f72697a6174696f6e0000000d63616368652d636f6e74726f6c0000000a636f"
    "6e6e656374696f6e0000000c636f6e74656e742d6261736500000010636f6e74656e742d656e636f64696e6700000010"
    "636f6e74656e742d6c616e67756167650000000e636f6e74656e742d6c656e67746800000010636f6e74656e742d6c6f"
    "636174696f6e0000000b636f6e74656e742d6d64350000000d636f6e74656e742d72616e67650000000c636f6e74656e"
    "742d74797065000000046461746500000004657461670000000665787065637400000007657870697265730000000466"
    "726f6d00000004686f73740000000869662d6d617463680000001169662d6d6f6469666965642d73696e63650000000d"
    "69662d6e6f6e652d6d617463680000000869662d72616e67650000001369662d756e6d6f6469666965642d73696e6365"
    "0000000d6c6173742d6d6f646966696564000000086c6f636174696f6e0000000c6d61782d666f727761726473000000"
    "06707261676d610000001270726f78792d61757468656e7469636174650000001370726f78792d617574686f72697a61"
    "74696f6e0000000572616e676500000007726566657265720000000b72657472792d6166746572000000067365727665"
    "7200000002746500000007747261696c6572000000117472616e736665722d656e636f64696e67000000077570677261"
    "64650000000a757365722d6167656e74000000047661727900000003766961000000077761726e696e67000000107777"
    "772d61757468656e746963617465000000066d6574686f64000000036765740000000673746174757300000006323030"
    "204f4b0000000776657273696f6e00000008485454502f312e310000000375726c000000067075626c69630000000a73"
    "65742d636f6f6b69650000000a6b6565702d616c697665000000066f726967696e313030313031323031323032323035"
    "323036333030333032333033333034333035333036333037343032343035343036343037343038343039343130343131"
    "343132343133343134343135343136343137353032353034353035323033204e6f6e2d417574686f7269746174697665"
    "20496e666f726d6174696f6e323034204e6f20436f6e74656e74333031204d6f766564205065726d616e656e746c7934"
    "303020426164205265717565737434303120556e617574686f72697a656434303320466f7262696464656e343034204e"
    "6f7420466f756e6435303020496e7465726e616c20536572766572204572726f72353031204e6f7420496d706c656d65"
    "6e746564353033205365727669636520556e617661696c61626c654a616e20466562204d617220417072204d6179204a"
    "756e204a756c204175672053657074204f6374204e6f76204465632030303a30303a3030204d6f6e2c205475652c2057"
    "65642c205468752c204672692c205361742c2053756e2c20474d546368756e6b65642c746578742f68746d6c2c696d61"
    "67652f706e672c696d6167652f6a70672c696d6167652f6769662c6170706c69636174696f6e2f786d6c2c6170706c69"
    "636174696f6e2f7868746d6c2b786d6c2c746578742f706c61696e2c746578742f6a6176617363726970742c7075626c"
    "6963707269766174656d61782d6167653d677a69702c6465666c6174652c73646368636861727365743d7574662d3863"
    "6861727365743d69736f2d383835392d312c7574662d2c2a2c656e713d302e"
)
CONTROL = 0x8000 | 3  # control bit and version 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FIN = 0x01
CANCEL = 5
CHUNK = 32 << 10  # DATA payload per frame
MAX_BLOCK = 1 << 20  # inflated header block cap

Headers = dict[str, list[str]]


def encode_block(headers: Headers) -> bytes:
    """Uncompressed name/value block: 32-bit counts and lengths, values joined by NUL."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        key, val = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(key)), key, struct.pack(">I", len(val)), val]
    return b"".join(out)


def decode_block(raw: bytes) -> Headers:
    (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
    for _ in range(count):
        (klen,) = struct.unpack_from(">I", raw, pos)
        key = raw[pos + 4:pos + 4 + klen].decode()
        pos += 4 + klen
        (vlen,) = struct.unpack_from(">I", raw, pos)
        out[key] = raw[pos + 4:pos + 4 + vlen].decode().split("\0")
        pos += 4 + vlen
    return out


class ClientStream:
    """One stream we opened; read() gives b"" once the server half-closed or reset it."""

    def __init__(self, session: SpdySession, sid: int) -> None:
        self.session, self.id = session, sid
        self.inbox: deque[bytes] = deque()
        self.more = asyncio.Event()
        self.reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.remote_done = self.local_done = self.reset = False

    def _deliver(self, data: bytes, fin: bool) -> None:
        if data:
            self.inbox.append(data)
        self.remote_done = self.remote_done or fin
        self.more.set()

    async def read(self) -> bytes:
        while not self.inbox:
            if self.remote_done:
                return b""
            self.more.clear()
            await self.more.wait()
        return self.inbox.popleft()

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            if self.local_done or self.reset:
                return
            await self.session._send(self.session.data_frame(self.id, data[i:i + CHUNK], 0))

    async def close(self) -> None:
        """FIN: an empty DATA frame with the FIN flag."""
        if not (self.local_done or self.reset):
            self.local_done = True
            await self.session._send(self.session.data_frame(self.id, b"", FIN))


class SpdySession:
    """A client session over an upgraded connection; reads frames in its own task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                        SPDY3_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self.streams: dict[int, ClientStream] = {}
        self.next_id = 1  # client streams are odd
        self.closed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read_frames())

    def control(self, ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", CONTROL, ftype, flags << 24 | len(payload)) + payload

    def data_frame(self, sid: int, data: bytes, flags: int) -> bytes:
        return struct.pack(">II", sid, flags << 24 | len(data)) + data

    def _block(self, headers: Headers) -> bytes:
        return self.deflate.compress(encode_block(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    async def _send(self, frame: bytes) -> None:
        if self.closed.is_set():
            return
        self.writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def open_stream(self, headers: Headers, timeout: float = 30.0) -> ClientStream:
        """SYN_STREAM (priority 0) and wait for the server's SYN_REPLY."""
        sid, self.next_id = self.next_id, self.next_id + 2
        st = self.streams[sid] = ClientStream(self, sid)
        await self._send(self.control(SYN_STREAM, 0, struct.pack(">IIBB", sid, 0, 0, 0)
                                      + self._block(headers)))
        if not await asyncio.wait_for(st.reply, timeout):
            raise ConnectionError(f"stream {headers} was refused")
        return st

    async def _read_frames(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(8)
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = await self.reader.readexactly(length)
                if first & 0x80000000:
                    await self._on_control(first & 0xFFFF, flags, payload)
                elif (st := self.streams.get(first & 0x7FFFFFFF)) is not None:
                    st._deliver(payload, bool(flags & FIN))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._shutdown()

    async def _on_control(self, ftype: int, flags: int, p: bytes) -> None:
        if ftype in (SYN_REPLY, HEADERS, RST_STREAM):
            (sid,) = struct.unpack_from(">I", p)
            st = self.streams.get(sid & 0x7FFFFFFF)
            if ftype != RST_STREAM:  # inflate every block, even a dropped stream's: zlib state
                decode_block(self.inflate.decompress(p[4:], MAX_BLOCK))
            if st is None:
                return
            if ftype == RST_STREAM:
                st.reset = True
                if not st.reply.done():
                    st.reply.set_result(False)
                st._deliver(b"", True)
                return
            if ftype == SYN_REPLY and not st.reply.done():
                st.reply.set_result(True)
            if flags & FIN:
                st._deliver(b"", True)
        elif ftype == PING:
            (pid,) = struct.unpack_from(">I", p)
            if pid % 2 == 0:  # the server's ping (even ids); ours would be odd
                await self._send(self.control(PING, 0, p[:4]))
        elif ftype == GOAWAY:
            self._shutdown()
        # SETTINGS and WINDOW_UPDATE: we never send enough to be held back by the peer's window

    async def aclose(self) -> None:
        """FIN our open streams, GOAWAY, close the connection and wait for the reader."""
        for st in list(self.streams.values()):
            if not st.reset and not st.local_done:
                await st.close()
        await self._send(self.control(GOAWAY, 0, struct.pack(">II", 0, 0)))
        self._shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def _shutdown(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for st in self.streams.values():
            if not st.reply.done():
                st.reply.set_result(False)
            st._deliver(b"", True)
        self.writer.close()
        if asyncio.current_task() is not self.task:
            self.task.cancel()
