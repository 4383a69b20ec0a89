"""berth run IMAGE [CMD...]: create (pulling if needed), start, and attach + wait unless -d."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import docker

from berthcli.commands.pull import pull
from berthcli.streams import relay

HELP = "Create and run a new container from an image"


def configure(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("-d", "--detach", action="store_true", help="run in the background, print the ID")
    a("-i", "--interactive", action="store_true", help="keep stdin open")
    a("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    a("--rm", action="store_true", help="remove the container when it exits")
    a("--name", help="container name")
    a("-e", "--env", action="append", default=[], help="KEY=VALUE")
    a("-w", "--workdir", help="working directory")
    a("-u", "--user", help="user[:group]")
    a("-l", "--label", action="append", default=[], help="KEY=VALUE")
    a("-p", "--publish", action="append", default=[], help="[IP:]HOSTPORT:PORT[/PROTO]")
    a("--entrypoint", help="override the image's entrypoint")
    a("-m", "--memory", help="memory limit, e.g. 64m")
    a("--cpus", type=float, help="number of CPUs")
    a("--pids-limit", type=int, help="maximum number of processes")
    a("--restart", default="no", help="no, always, unless-stopped, on-failure[:N]")
    a("--network", default="bridge", help="bridge, host or none")
    a("image")
    a("command", nargs=argparse.REMAINDER)


def port_bindings(specs: list[str]) -> dict[str, Any]:
    """`-p` specs in docker-py's `ports` shape: {"80/tcp": ("127.0.0.1", 8080)}."""
    out: dict[str, Any] = {}
    for spec in specs:
        spec, _, proto = spec.partition("/")
        parts = spec.rsplit(":", 2)
        cport = f"{parts[-1]}/{proto or 'tcp'}"
        if len(parts) == 1:
            out[cport] = None
        elif len(parts) == 2:
            out[cport] = int(parts[0]) if parts[0] else None
        else:
            out[cport] = (parts[0], int(parts[1])) if parts[1] else (parts[0],)
    return out


def restart_policy(spec: str) -> dict[str, Any]:
    name, _, count = spec.partition(":")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def create_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "image": args.image, "command": args.command or None, "name": args.name,
        "environment": args.env, "working_dir": args.workdir, "user": args.user,
        "labels": dict(lbl.partition("=")[::2] for lbl in args.label),
        "ports": port_bindings(args.publish), "entrypoint": args.entrypoint,
        "stdin_open": args.interactive, "tty": args.tty, "network_mode": args.network,
        "restart_policy": restart_policy(args.restart),
        # client-side removal when attached (the exit code must be read first); the
        # daemon's AutoRemove when detached, as the docker CLI does
        "auto_remove": args.rm and args.detach,
        "mem_limit": args.memory, "pids_limit": args.pids_limit,
        "nano_cpus": int(args.cpus * 1e9) if args.cpus else None,
    }  # fmt: skip
    return {k: v for k, v in opts.items() if v is not None}


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    opts = create_options(args)
    try:
        ctr = client.containers.create(**opts)
    except docker.errors.ImageNotFound:
        print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
        pull(client, args.image, sys.stderr)
        ctr = client.containers.create(**opts)
    if args.detach:
        ctr.start()
        print(ctr.id)
        return 0
    sock = client.api.attach_socket(ctr.id, params={"stdin": int(args.interactive), "stdout": 1,
                                                    "stderr": 1, "stream": 1})  # fmt: skip
    try:
        ctr.start()
        relay(sock, tty=args.tty, stdin=args.interactive)
        return int(ctr.wait()["StatusCode"])
    finally:
        if args.rm:
            client.api.remove_container(ctr.id, force=True)
