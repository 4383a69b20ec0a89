"""berth push NAME[:TAG]: upload an image, drawing the daemon's per-layer progress."""

from __future__ import annotations

import argparse
import sys

import docker

from berthcli.commands.pull import split_ref
from berthcli.progress import PullError, show_pull

HELP = "Push an image to a registry"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("image")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    repo, tag = split_ref(args.image)
    events = (ev for ev in client.api.push(repo, tag=tag, stream=True, decode=True)
              if "aux" not in ev)
    if args.quiet:
        for ev in events:
            if "error" in ev:
                raise PullError(str(ev["error"]))
        return 0
    show_pull(events, sys.stdout)
    return 0
