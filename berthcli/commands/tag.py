"""berth tag SOURCE TARGET: give an image another name."""

from __future__ import annotations

import argparse

import docker

from berthcli.commands.pull import split_ref

HELP = "Create a tag TARGET that refers to SOURCE"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    repo, tag = split_ref(args.target)
    client.api.tag(args.source, repo, tag)
    return 0
