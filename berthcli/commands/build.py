"""berth build [-t NAME] [-f FILE] [--build-arg K=V] [--target S] [--no-cache] DIR."""

from __future__ import annotations

import argparse
import os
import sys

import docker

from berthcli.progress import PullError

HELP = "Build an image from a Dockerfile (the classic builder's protocol)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--tag", action="append", default=[], help="name:tag (repeatable)")
    p.add_argument("-f", "--file", help="Dockerfile path inside the context (default Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="a build argument (K alone takes the value from the environment)")
    p.add_argument("--target", help="the stage to build")
    p.add_argument("--no-cache", action="store_true", help="run every step")
    p.add_argument("--pull", action="store_true", help="always pull the base images")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--network", help="network mode for RUN (default, none, host)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("path", help="the build context directory")


def _pairs(items: list[str], from_env: bool) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq and from_env:
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    stream = client.api.build(
        path=args.path, tag=args.tag[0] if args.tag else None, dockerfile=args.file,
        buildargs=_pairs(args.build_arg, True), target=args.target, nocache=args.no_cache,
        pull=args.pull, labels=_pairs(args.label, False) or None, network_mode=args.network,
        quiet=args.quiet, rm=True, decode=True)
    image_id = ""
    for msg in stream:
        if "error" in msg:
            raise PullError(str(msg["error"]))
        if "aux" in msg and "ID" in msg["aux"]:
            image_id = msg["aux"]["ID"]
        elif "stream" in msg and args.quiet:  # dockerd's quiet build: the ID as a stream line
            image_id = image_id or msg["stream"].strip()
        elif "stream" in msg:
            sys.stdout.write(msg["stream"])
            sys.stdout.flush()
    if not image_id:
        raise PullError("the daemon finished the build without an image ID")
    for extra in args.tag[1:]:
        repo, _, tag = extra.rpartition(":") if ":" in extra.rsplit("/", 1)[-1] else (
            extra, "", "latest")
        client.api.tag(image_id, repo, tag)
        if not args.quiet:
            print(f"Successfully tagged {extra}")
    if args.quiet:
        print(image_id)
    return 0
