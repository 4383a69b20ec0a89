"""berth ps: list containers as `docker ps` does."""

from __future__ import annotations

import argparse

import docker

from berthcli.table import ago, print_table

HELP = "List containers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true", help="full IDs and commands")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="status, label, name, id or ancestor")  # fmt: skip


def filters(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, _, value = spec.partition("=")
        out.setdefault(key, []).append(value)
    return out


def ports(entries: list[dict]) -> str:
    shown = []
    for p in entries:
        if p.get("PublicPort"):
            shown.append(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}")
        else:
            shown.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(shown)


def main(client: docker.DockerClient, args: argparse.Namespace) -> int:
    rows = client.api.containers(all=args.all, filters=filters(args.filter))
    if args.quiet:
        for c in rows:
            print(c["Id"] if args.no_trunc else c["Id"][:12])
        return 0
    table = []
    for c in rows:
        cmd = c.get("Command", "")
        if not args.no_trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        table.append([
            c["Id"] if args.no_trunc else c["Id"][:12], c["Image"], f'"{cmd}"',
            ago(c["Created"]), c.get("Status", ""), ports(c.get("Ports") or []),
            ",".join(n.lstrip("/") for n in c.get("Names") or []),
        ])  # fmt: skip
    print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], table)
    return 0
