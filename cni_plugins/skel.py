"""Plugin skeleton: CNI env + stdin parsing, error reporting and command dispatch (CNI spec 1.x)."""

from __future__ import annotations

import os
import sys

from cni_plugins import lean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Handler = Callable[["Args"], "dict[str, Any] | None"]

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

# Well-known error codes from the CNI spec.
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_NOT_AVAILABLE = 50


class CNIError(Exception):
    """Carries a spec error code so main() can emit the spec's error JSON."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class Args:
    """Everything the runtime handed us for one invocation (no dataclass: it costs 8 ms)."""

    def __init__(
        self,
        command: str,
        container_id: str,
        netns: str,
        ifname: str,
        path: list[str],
        cni_args: dict[str, str],
        conf: dict[str, Any],
        raw_conf: bytes = b"",
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.path = path
        self.cni_args = cni_args
        self.conf = conf
        self.raw_conf = raw_conf

    @property
    def version(self) -> str:
        return str(self.conf.get("cniVersion", "1.0.0"))


def _parse_cni_args(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw.split(";"):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise CNIError(E_INVALID_ENV, f"invalid CNI_ARGS pair {part!r}")
        out[key] = val
    return out


_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
}


def load_args(env: dict[str, str], stdin: bytes) -> Args:
    """Validate the environment the way the spec requires before touching anything."""
    command = env.get("CNI_COMMAND", "")
    if command not in _REQUIRED and command != "VERSION":
        raise CNIError(E_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
    for var in _REQUIRED.get(command, ()):
        if var not in env:
            raise CNIError(E_INVALID_ENV, f"required env variable {var} missing")
    try:
        conf = lean.loads(stdin) if stdin.strip() else {}
    except ValueError as exc:
        raise CNIError(E_DECODE, "failed to decode network configuration", str(exc)) from exc
    if not isinstance(conf, dict):
        raise CNIError(E_DECODE, "network configuration is not a JSON object")
    args = Args(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        path=[p for p in env.get("CNI_PATH", "").split(os.pathsep) if p],
        cni_args=_parse_cni_args(env.get("CNI_ARGS", "")),
        conf=conf,
        raw_conf=stdin,
    )
    if command != "VERSION" and args.version not in SUPPORTED_VERSIONS:
        raise CNIError(E_INCOMPATIBLE_VERSION, f"incompatible CNI version {args.version}")
    if command == "CHECK" and args.version.startswith("0.3."):
        raise CNIError(E_INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
    return args


def convert_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Our results are 1.0.0-shaped; 0.3.x/0.4.0 only add an IP `version` field."""
    out = dict(result)
    out["cniVersion"] = version
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        out["ips"] = [
            {**ip, "version": "6" if ":" in ip["address"] else "4"} for ip in result.get("ips", [])
        ]
    return out


def prev_result(args: Args) -> dict[str, Any] | None:
    prev = args.conf.get("prevResult")
    return prev if isinstance(prev, dict) else None


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(lean.dumps(obj))
    sys.stdout.flush()


def invoke(
    handlers: dict[str, Handler], env: dict[str, str], stdin: bytes, about: str = ""  # noqa: F821
) -> tuple[int, dict[str, Any] | None]:
    """One call minus process I/O: (exit code, JSON for stdout), also run in-process by bridge."""
    version = "1.0.0"
    try:
        args = load_args(env, stdin)
        version = args.version
        if args.command == "VERSION":
            return 0, {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS}
        handler = handlers.get(args.command)
        if handler is None:
            if args.command in ("GC", "STATUS"):
                return 0, None
            raise CNIError(E_INVALID_ENV, f"{args.command} not supported")
        result = handler(args)
        return 0, None if result is None else convert_result(result, version)
    except CNIError as exc:
        return 1, {"cniVersion": version, "code": exc.code, "msg": exc.msg, "details": exc.details}
    except OSError as exc:
        return 1, {"cniVersion": version, "code": E_IO, "msg": str(exc), "details": about}
    except Exception as exc:  # still answer in the spec's error format, never a bare traceback
        return 1, {"cniVersion": version, "code": 999, "msg": f"{about}: {exc!r}", "details": ""}


def run(handlers: dict[str, Handler], about: str = "") -> int:  # noqa: F821
    """Dispatch one invocation; returns the process exit code."""
    out: dict[str, Any] | None
    try:
        stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    except OSError as exc:
        rc, out = 1, {"cniVersion": "1.0.0", "code": E_IO, "msg": str(exc), "details": about}
    else:
        rc, out = invoke(handlers, dict(os.environ), stdin, about)
    if out is not None:
        _emit(out)
    return rc
