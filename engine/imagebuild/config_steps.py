"""Instructions that only change the image config: no container, no layer.

Each function takes the instruction's words already expanded where Docker expands them and
changes the stage's config in place, with Docker's rules for forms and defaults.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from engine.imagebuild.dockerfile import DockerfileError, Instruction

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s))+$")
_UNIT_NS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3,
            "µs": 10**3, "ns": 1}
DEFAULT_SHELL = ["/bin/sh", "-c"]


def duration_ns(text: str, where: str) -> int:
    """Go duration syntax (1m30s, 500ms), as HEALTHCHECK's flags take it."""
    if not _DURATION.match(text):
        raise DockerfileError(f"{where}: invalid duration {text!r}")
    return int(sum(float(n) * _UNIT_NS[u]
                   for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)", text)))


def command(ins: Instruction, config: dict[str, Any]) -> list[str]:
    """CMD/ENTRYPOINT/RUN words: JSON form as given, shell form through the stage's SHELL."""
    if ins.json:
        return list(ins.values)
    shell = config.get("Shell") or DEFAULT_SHELL
    return [*shell, " ".join(ins.values)] if ins.values else []


def set_env(config: dict[str, Any], key: str, value: str) -> None:
    env = [e for e in config.get("Env") or [] if e.partition("=")[0] != key]
    config["Env"] = [*env, f"{key}={value}"]


def env_map(config: dict[str, Any]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in config.get("Env") or [])


def workdir(config: dict[str, Any], path: str) -> str:
    """A relative WORKDIR continues from the current one."""
    if not path:
        raise DockerfileError("WORKDIR cannot be empty")
    current = config.get("WorkingDir") or "/"
    new = posixpath.normpath(posixpath.join(current, path))
    config["WorkingDir"] = new
    return new


def expose(config: dict[str, Any], ports: list[str], where: str) -> None:
    exposed = dict(config.get("ExposedPorts") or {})
    for p in ports:
        num, _, proto = p.partition("/")
        proto = (proto or "tcp").lower()
        lo, _, hi = num.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"{where}: invalid containerPort: {p}")
        for port in range(int(lo), int(hi or lo) + 1):
            exposed[f"{port}/{proto}"] = {}
    config["ExposedPorts"] = exposed


def volume(config: dict[str, Any], paths: list[str], where: str) -> None:
    vols = dict(config.get("Volumes") or {})
    for p in paths:
        if not p.strip():
            raise DockerfileError(f"{where}: VOLUME specified can not be an empty string")
        vols[p] = {}
    config["Volumes"] = vols


def healthcheck(config: dict[str, Any], ins: Instruction) -> None:
    """NONE disables the base image's check; CMD sets one with Docker's flag defaults (0 =
    the daemon's default) so `docker inspect` shows what the Dockerfile said."""
    words = list(ins.values)
    if not words:
        raise DockerfileError(f"{ins.where()}: HEALTHCHECK needs NONE or CMD")
    kind = words[0].upper()
    if kind == "NONE":
        if len(words) > 1 or ins.flags:
            raise DockerfileError(f"{ins.where()}: HEALTHCHECK NONE takes no arguments")
        config["Healthcheck"] = {"Test": ["NONE"]}
        return
    if kind != "CMD" or len(words) < 2:
        raise DockerfileError(f"{ins.where()}: HEALTHCHECK needs NONE or CMD followed by a "
                              "command")
    test = ["CMD", *words[1:]] if ins.json else ["CMD-SHELL", " ".join(words[1:])]
    hc: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod")):
        if flag in ins.flags:
            hc[key] = duration_ns(ins.flags[flag], ins.where())
    if "retries" in ins.flags:
        if not ins.flags["retries"].isdigit() or int(ins.flags["retries"]) < 1:
            raise DockerfileError(f"{ins.where()}: --retries must be at least 1")
        hc["Retries"] = int(ins.flags["retries"])
    config["Healthcheck"] = hc


def apply(config: dict[str, Any], ins: Instruction, words: list[str],
          pairs: list[tuple[str, str]]) -> None:
    """Apply a config-only instruction; words/pairs are its operands, expanded."""
    cmd = ins.cmd
    if cmd == "ENV":
        if not pairs:
            raise DockerfileError(f"{ins.where()}: ENV needs at least one name=value")
        for k, v in pairs:
            set_env(config, k, v)
    elif cmd == "LABEL":
        config["Labels"] = {**(config.get("Labels") or {}), **dict(pairs)}
    elif cmd == "MAINTAINER":
        pass  # deprecated; dockerd records it as the image's author, which the config omits
    elif cmd == "USER":
        if len(words) != 1 or not words[0]:
            raise DockerfileError(f"{ins.where()}: USER requires exactly one argument")
        config["User"] = words[0]
    elif cmd == "EXPOSE":
        expose(config, words, ins.where())
    elif cmd == "VOLUME":
        volume(config, words, ins.where())
    elif cmd == "CMD":
        config["Cmd"] = command(ins, config)
    elif cmd == "ENTRYPOINT":
        config["Entrypoint"] = command(ins, config) or None
        config["Cmd"] = None  # a new ENTRYPOINT drops the base image's CMD, as Docker does
    elif cmd == "STOPSIGNAL":
        if len(words) != 1:
            raise DockerfileError(f"{ins.where()}: STOPSIGNAL requires exactly one argument")
        config["StopSignal"] = words[0]
    elif cmd == "HEALTHCHECK":
        healthcheck(config, ins)
    elif cmd == "SHELL":
        if not ins.json or not words:
            raise DockerfileError(f"{ins.where()}: SHELL requires the arguments to be in JSON "
                                  "form")
        config["Shell"] = words
    elif cmd == "ONBUILD":
        trigger = ins.original.split(None, 1)[1]
        config["OnBuild"] = [*(config.get("OnBuild") or []), trigger]
    else:
        raise AssertionError(f"not a config instruction: {cmd}")
