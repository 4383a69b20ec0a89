"""`berth VERB ...`: parse the global flags, hand the verb to its module, turn errors into text."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

import docker
import requests

from berthcli.client import connect, resolve_host
from berthcli.commands import (
    build,
    images,
    inspect,
    logs,
    ps,
    pull,
    push,
    rm,
    rmi,
    run,
    stop,
    tag,
)
from berthcli.commands import exec as exec_cmd
from berthcli.progress import PullError

VERBS: list[ModuleType] = [run, ps, images, pull, push, build, tag, exec_cmd, logs, stop, rm,
                           rmi, inspect]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="berth", description="Run containers on Berth (Docker API).")
    p.add_argument("-H", "--host", help="daemon socket (default: $DOCKER_HOST, else "
                   "unix:///run/berth/docker.sock)")  # fmt: skip
    sub = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for mod in VERBS:
        verb = mod.__name__.rsplit(".", 1)[1]
        sp = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
        mod.configure(sp)
        sp.set_defaults(handler=mod.main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    host = resolve_host(args.host)
    try:
        client = connect(host)
    except docker.errors.DockerException as e:
        print(f"berth: cannot reach the daemon at {host}: {e}", file=sys.stderr)
        return 1
    try:
        return int(args.handler(client, args))
    except docker.errors.APIError as e:
        print(f"Error response from daemon: {e.explanation}", file=sys.stderr)
        return 125 if args.verb == "run" else 1
    except (PullError, docker.errors.DockerException) as e:
        print(f"berth: {e}", file=sys.stderr)
        return 1
    except requests.exceptions.ConnectionError:
        print(f"berth: cannot connect to {host}: is berthd running?", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
