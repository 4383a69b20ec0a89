"""A daemon that does no work: the floor under a Docker-path row, measured with the same CLI.

It answers the requests `docker network create` and `docker network rm` send (a ping, the
create, an inspect, the delete) from canned replies with the headers dockerd's replies carry
that the CLI reads, on a unix socket of its own, from a thread of the bench process. A real
daemon's p50 can go no lower than this one's: when the stub's ratio to dockerd is already above
a row's target, the target is out of any daemon's reach through this client on this machine.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

_HEADERS = {"Api-Version": "1.41", "Docker-Experimental": "false", "Ostype": "linux",
            "Server": "Docker/20.10.24 (linux)"}
_NETWORK = {"Name": "stub", "Id": "0" * 64, "Scope": "local", "Driver": "bridge",
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": {}, "Config": []},
            "Internal": False, "Attachable": False, "Ingress": False, "Containers": {},
            "Options": {}, "Labels": {}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: object | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in _HEADERS.items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drain(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        self._reply(200)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/_ping"):
            self._reply(200)
        elif "/networks/" in self.path:
            self._reply(200, _NETWORK)
        else:
            self._reply(404, {"message": f"page not found: {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        self._drain()
        if self.path.endswith("/networks/create"):
            self._reply(201, {"Id": _NETWORK["Id"], "Warning": ""})
        else:
            self._reply(404, {"message": f"page not found: {self.path}"})

    def do_DELETE(self) -> None:  # noqa: N802
        self._reply(204)

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """http.server wants an address pair; a unix peer has none."""
        conn, _ = self.socket.accept()
        return conn, ("stub", 0)


@contextmanager
def stub_daemon(workdir: Path) -> Iterator[str]:
    """The stub's DOCKER_HOST while the context lasts."""
    path = workdir / "stub.sock"
    if path.exists():
        os.unlink(path)
    server = _Server(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        os.unlink(path)
