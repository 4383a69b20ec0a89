"""berth stop CONTAINER...: SIGTERM (or the image's StopSignal), SIGKILL after the timeout."""

from __future__ import annotations

import argparse

import docker

HELP = "Stop one or more running containers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=int, default=None, help="seconds before SIGKILL")
    p.add_argument("containers", nargs="+")


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    for name in args.containers:
        if args.time is None:
            client.api.stop(name)
        else:
            client.api.stop(name, timeout=args.time)
        print(name)
    return 0
