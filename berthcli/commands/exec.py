"""berth exec CONTAINER CMD...: run a command in a running container; its exit code is ours."""

from __future__ import annotations

import argparse

import docker

from berthcli.streams import relay

HELP = "Run a command in a running container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", default="", help="user[:group]")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    if not args.command:
        raise docker.errors.DockerException("exec needs a command")
    api = client.api
    ex = api.exec_create(args.container, args.command, stdin=args.interactive, tty=args.tty,
                         environment=args.env or None, workdir=args.workdir,
                         user=args.user)  # fmt: skip
    if args.detach:
        api.exec_start(ex["Id"], detach=True)
        return 0
    sock = api.exec_start(ex["Id"], tty=args.tty, socket=True)
    relay(sock, tty=args.tty, stdin=args.interactive)
    return int(api.exec_inspect(ex["Id"])["ExitCode"] or 0)
