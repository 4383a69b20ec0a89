"""berth images: list images as `docker images` does."""

from __future__ import annotations

import argparse

import docker

from berthcli.table import ago, human_size, print_table

HELP = "List images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("-a", "--all", action="store_true", help="include intermediate images")
    p.add_argument("repository", nargs="?", help="only this repository")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    listed = client.api.images(name=args.repository, all=args.all)
    if args.quiet:
        for img in listed:
            print(img["Id"].split(":", 1)[1][:12])
        return 0
    table = []
    for img in listed:
        for tagged in img.get("RepoTags") or ["<none>:<none>"]:
            repo, _, tag = tagged.rpartition(":")
            table.append([repo, tag, img["Id"].split(":", 1)[1][:12], ago(img["Created"]),
                          human_size(img["Size"])])  # fmt: skip
    print_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], table)
    return 0
