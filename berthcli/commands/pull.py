"""berth pull IMAGE: fetch an image, drawing the daemon's per-layer progress."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import docker

from berthcli.progress import show_pull

HELP = "Pull an image from a registry"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("image")


def split_ref(ref: str) -> tuple[str, str | None]:
    """repo and tag (or digest) as POST /images/create wants them; a port is not a tag."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, digest
    head, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return head, tag
    return ref, "latest"


def pull(client: docker.DockerClient, ref: str, out: TextIO | None = sys.stdout) -> None:
    """Pull with progress on `out` (None: silent). Shared with `berth run`."""
    repo, tag = split_ref(ref)
    events = client.api.pull(repo, tag=tag, stream=True, decode=True)
    if out is None:
        for ev in events:
            if "error" in ev:
                raise docker.errors.DockerException(ev["error"])
        return
    show_pull(events, out)


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    pull(client, args.image, None if args.quiet else sys.stdout)
    if args.quiet:
        print(args.image)
    return 0
