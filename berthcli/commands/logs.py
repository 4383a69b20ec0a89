"""berth logs CONTAINER: print (or follow) a container's output, stdout and stderr apart."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import docker

from berthcli.streams import STDERR, STDOUT

HELP = "Fetch the logs of a container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="follow new output")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("-n", "--tail", default="all", help="lines from the end (default all)")
    p.add_argument("--since", type=int, default=0, help="only since this Unix time")
    p.add_argument("container")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    api = client.api
    info = api.inspect_container(args.container)
    tty = bool(info["Config"]["Tty"])
    params = {"stdout": 1, "stderr": 1, "follow": int(args.follow), "tail": args.tail,
              "timestamps": int(args.timestamps), "since": args.since}  # fmt: skip
    res = api._get(api._url("/containers/{0}/logs", info["Id"]), params=params, stream=True)
    api._raise_for_status(res)
    for kind, data in frames(res.raw, tty):
        target = sys.stderr.buffer if kind == STDERR else sys.stdout.buffer
        target.write(data)
        target.flush()
    return 0


def frames(body: Any, tty: bool) -> Iterator[tuple[int, bytes]]:
    """(stream, data) from a logs response body: raw with a TTY, else Docker's 8-byte-header
    frames. Read through the HTTP body (not the socket), so the end of the body ends it."""
    if tty:
        while chunk := body.read1(65536) if hasattr(body, "read1") else body.read(4096):
            yield STDOUT, chunk
        return
    while len(header := body.read(8)) == 8:
        size = int.from_bytes(header[4:8], "big")
        yield header[0], body.read(size)
