"""Layer-body transport: keep-alive reuse, redirects that drop credentials, timeouts, cuts."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime.images.blobhttp import BlobHTTP, ReadTimeout, Response, TransportError

BODY = bytes(range(256)) * 4096  # 1 MiB


def _chunks(resp: Response, size: int = 300_000) -> Iterator[bytes]:
    """The body as the fetch thread receives it: into one reused buffer, 0 at the end."""
    buf = memoryview(bytearray(size))
    while n := resp.readinto(buf):
        yield buf[:n].tobytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        """Number each accepted connection: a client port can come back for a new connection
        (loopback reuses ports a reset freed), so the port cannot tell two connections apart."""
        super().setup()
        self.conn_no = next(self.server.accepted)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.seen.append((self.path, self.headers.get("Authorization"), self.conn_no))
        if self.path.startswith("/redirect") and srv.target:
            self.send_response(307)
            self.send_header("Location", f"{srv.target}/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            srv.release.wait(30)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str | None, int]] = []
        self.accepted = itertools.count()
        self.target = ""
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def _serve() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.mark.timeout(30)
def test_bodies_reuse_one_connection() -> None:
    http = BlobHTTP(10, 10)
    with _serve() as srv:
        for _ in range(3):
            resp = http.get(f"{srv.url}/blob", {})
            assert resp.status == 200 and b"".join(_chunks(resp)) == BODY
            resp.close()
        http.close()
    assert len({conn for _p, _a, conn in srv.seen}) == 1


@pytest.mark.timeout(30)
def test_body_read_to_its_length_gives_the_connection_back() -> None:
    """A blob's reader stops at the declared size and never asks for the body's end: close()
    then returns the connection, and a late cut() (a pull abandoned after the layer finished)
    leaves it alone; a body left half read closes its connection instead."""
    http = BlobHTTP(10, 10)
    with _serve() as srv:
        resp = http.get(f"{srv.url}/blob", {})
        got = b""
        for chunk in _chunks(resp):
            got += chunk
            if len(got) == len(BODY):
                break
        resp.close()
        resp.cut()
        resp = http.get(f"{srv.url}/blob", {})
        assert next(_chunks(resp))
        resp.close()  # half read: not reusable
        resp = http.get(f"{srv.url}/blob", {})
        assert b"".join(_chunks(resp)) == BODY
        resp.close()
        http.close()
    conns = [conn for _p, _a, conn in srv.seen]
    assert conns[0] == conns[1] != conns[2]


@pytest.mark.timeout(30)
def test_redirect_to_another_host_drops_authorization() -> None:
    http = BlobHTTP(10, 10)
    with _serve() as origin, _serve() as storage:
        origin.target = storage.url
        resp = http.get(f"{origin.url}/redirect", {"Authorization": "Bearer secret"})
        assert resp.status == 200 and b"".join(_chunks(resp)) == BODY
        http.close()
    assert origin.seen[0][1] == "Bearer secret"
    assert storage.seen == [("/blob", None, storage.seen[0][2])]


@pytest.mark.timeout(30)
def test_stalled_body_times_out_and_cut_wakes_a_blocked_read() -> None:
    with _serve() as srv:
        resp = BlobHTTP(0.3, 5).get(f"{srv.url}/stall", {})
        with pytest.raises(ReadTimeout):
            b"".join(_chunks(resp))
        resp.close()
        resp = BlobHTTP(60, 5).get(f"{srv.url}/stall", {})
        threading.Timer(0.2, resp.cut).start()
        t0 = time.monotonic()
        with pytest.raises(TransportError):
            b"".join(_chunks(resp))
        assert time.monotonic() - t0 < 5
        resp.close()


def test_refused_connection_is_a_transport_error() -> None:
    with _serve() as srv:
        url = srv.url
    with pytest.raises(TransportError):
        BlobHTTP(1, 1).get(f"{url}/blob", {})
