"""berth inspect NAME...: the daemon's JSON for containers or images, as a JSON array."""

from __future__ import annotations

import argparse
import json
import sys

import docker

HELP = "Return low-level information on containers or images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", choices=["container", "image"], help="only look for this kind")
    p.add_argument("names", nargs="+")


def lookup(client: docker.DockerClient, name: str, kind: str | None) -> dict | None:
    """A container first, then an image, as `docker inspect` resolves an ambiguous name."""
    if kind in (None, "container"):
        try:
            return dict(client.api.inspect_container(name))
        except docker.errors.NotFound:
            pass
    if kind in (None, "image"):
        try:
            return dict(client.api.inspect_image(name))
        except docker.errors.NotFound:
            pass
    return None


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    found, code = [], 0
    for name in args.names:
        obj = lookup(client, name, args.type)
        if obj is None:
            print(f"Error: No such object: {name}", file=sys.stderr)
            code = 1
        else:
            found.append(obj)
    print(json.dumps(found, indent=4))
    return code
