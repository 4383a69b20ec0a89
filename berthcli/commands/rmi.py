"""berth rmi IMAGE...: untag and delete images, printing what the daemon did."""

from __future__ import annotations

import argparse
import sys

import docker

HELP = "Remove one or more images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="remove every tag of an image")
    p.add_argument("--no-prune", action="store_true", help="keep untagged parents")
    p.add_argument("images", nargs="+")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    code = 0
    for ref in args.images:
        try:
            for item in client.api.remove_image(ref, force=args.force, noprune=args.no_prune):
                for action, what in item.items():
                    print(f"{action}: {what}")
        except docker.errors.APIError as e:
            print(f"Error response from daemon: {e.explanation}", file=sys.stderr)
            code = 1
    return code
