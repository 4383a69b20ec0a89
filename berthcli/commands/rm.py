"""berth rm CONTAINER...: remove containers (-f kills running ones first)."""

from __future__ import annotations

import argparse
import sys

import docker

HELP = "Remove one or more containers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes too")
    p.add_argument("containers", nargs="+")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    code = 0
    for name in args.containers:  # like docker: go on after a failure, exit 1 at the end
        try:
            client.api.remove_container(name, force=args.force, v=args.volumes)
            print(name)
        except docker.errors.APIError as e:
            print(f"Error response from daemon: {e.explanation}", file=sys.stderr)
            code = 1
    return code
