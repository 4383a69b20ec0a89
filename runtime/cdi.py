"""Container Device Interface (CDI spec 0.3-0.8): vendor spec files name devices and say how to
give one to a container (env, device nodes, mounts, hooks); `inject` applies them to an OCI spec.

Both front ends call `inject` with fully qualified names (`vendor.com/class=name`): the CRI
path with `CDIDevices` and the `cdi.k8s.io/*` annotations, the Docker API path with the
`cdi` driver's DeviceRequests. Spec files are read on every inject that names a device: they
are few and small, and a vendor tool may rewrite them at any time (nvidia-ctk does at boot).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SPEC_DIRS = ["/etc/cdi", "/var/run/cdi"]  # later dirs override earlier ones
ANNOTATION_PREFIX = "cdi.k8s.io/"
MIN_VERSION, MAX_VERSION = (0, 3, 0), (0, 8, 0)
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
_VENDOR = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_CLASS = r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?"
_KIND = re.compile(rf"({_VENDOR})/({_CLASS})")
_DEVICE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class CdiError(ValueError):
    """A device that cannot be given to the container: the message names the device and, when
    a spec file is at fault, the file. Front ends answer it as a bad request."""


@dataclass
class Spec:
    """One readable spec file."""

    path: str
    kind: str
    edits: dict[str, Any]
    devices: dict[str, dict[str, Any]]  # name -> its containerEdits


@dataclass
class Registry:
    """Every spec file in the dirs; broken files are kept as errors, not raised, so that one
    vendor's bad file does not take every other vendor's devices down with it."""

    devices: dict[str, tuple[Spec, dict[str, Any]]] = field(default_factory=dict)  # by full name
    broken: dict[str, str] = field(default_factory=dict)  # file -> what is wrong with it
    dirs: list[str] = field(default_factory=list)


def parse_name(name: str) -> tuple[str, str]:
    """`vendor.com/class=name` -> (kind, device name)."""
    kind, sep, dev = name.partition("=")
    if not sep or not _KIND.fullmatch(kind) or not _DEVICE.fullmatch(dev):
        raise CdiError(f"CDI device '{name[:200]}' is not a fully qualified name "
                       "(vendor.com/class=name)")
    return kind, dev


def _check_version(doc: dict[str, Any]) -> None:
    v = doc.get("cdiVersion")
    m = _VERSION.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"cdiVersion {v!r} is not a version like 0.6.0")
    if not MIN_VERSION <= tuple(int(x) for x in m.groups()) <= MAX_VERSION:
        raise ValueError(f"cdiVersion {v} is not supported (0.3.0 to 0.8.0)")


def _check_edits(edits: Any, where: str) -> dict[str, Any]:
    """containerEdits as the spec defines them; anything malformed is named."""
    if edits is None:
        return {}
    if not isinstance(edits, dict):
        raise ValueError(f"{where}: containerEdits must be a mapping")
    for e in edits.get("env") or []:
        if not isinstance(e, str) or "=" not in e:
            raise ValueError(f"{where}: env entry {e!r} is not KEY=VALUE")
    for d in edits.get("deviceNodes") or []:
        if not isinstance(d, dict) or not isinstance(d.get("path"), str) \
                or not os.path.isabs(d["path"]):
            raise ValueError(f"{where}: deviceNode {d!r} has no absolute path")
        if d.get("type", "c") not in ("c", "b", "u", "p"):
            raise ValueError(f"{where}: deviceNode {d['path']} has type {d.get('type')!r}")
        if set(d.get("permissions") or "") - set("rwm"):
            raise ValueError(f"{where}: deviceNode {d['path']} permissions not in rwm")
    for m in edits.get("mounts") or []:
        if not isinstance(m, dict) or not m.get("hostPath") or not m.get("containerPath"):
            raise ValueError(f"{where}: mount {m!r} needs hostPath and containerPath")
    for h in edits.get("hooks") or []:
        if not isinstance(h, dict) or h.get("hookName") not in HOOK_NAMES \
                or not isinstance(h.get("path"), str):
            raise ValueError(f"{where}: hook {h!r} needs a path and a hookName of "
                             f"{', '.join(HOOK_NAMES)}")
    return edits


def load_spec(path: str) -> Spec:
    """Parse and check one spec file (JSON, or YAML by its .yaml/.yml name)."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a CDI spec (expected a mapping at the top)")
    _check_version(doc)
    kind = doc.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"kind {kind!r} is not vendor.com/class")
    devices: dict[str, dict[str, Any]] = {}
    for d in doc.get("devices") or []:
        name = d.get("name") if isinstance(d, dict) else None
        if not isinstance(name, str) or not _DEVICE.fullmatch(name):
            raise ValueError(f"device name {name!r} is not valid")
        if name in devices:
            raise ValueError(f"device {name} is defined twice")
        devices[name] = _check_edits(d.get("containerEdits"), f"device {name}")
        if not devices[name]:
            raise ValueError(f"device {name} has no containerEdits")
    if not devices:
        raise ValueError("defines no devices")
    return Spec(path, kind, _check_edits(doc.get("containerEdits"), "containerEdits"), devices)


def _spec_files(d: str) -> list[str]:
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(d, n) for n in names if n.endswith((".json", ".yaml", ".yml"))]


def load(dirs: list[str]) -> Registry:
    """Every spec in dirs; a device defined in a later dir replaces an earlier definition."""
    reg = Registry(dirs=list(dirs))
    for d in dirs:
        here: dict[str, str] = {}
        for path in _spec_files(d):
            try:
                spec = load_spec(path)
            except (OSError, ValueError) as exc:
                reg.broken[path] = str(exc)
                continue
            for name, edits in spec.devices.items():
                full = f"{spec.kind}={name}"
                if full in here:  # the same priority: neither file wins
                    reg.broken[path] = f"device {full} is also defined in {here[full]}"
                    continue
                here[full] = path
                reg.devices[full] = (spec, edits)
    return reg


Resolved = tuple[str, Spec, dict[str, Any]]  # full device name, its spec, its edits


def resolve(reg: Registry, names: list[str]) -> list[Resolved]:
    """(name, spec, device edits) for each name, in order; `kind=all` means every device of
    kind unless a spec defines a device literally called `all`."""
    out: list[Resolved] = []
    for name in names:
        kind, dev = parse_name(name)
        hit = reg.devices.get(name)
        if hit is not None:
            out.append((name, *hit))
        elif dev == "all" and any(full.startswith(kind + "=") for full in reg.devices):
            out.extend((full, *v) for full, v in sorted(reg.devices.items())
                       if full.startswith(kind + "="))
        else:
            raise CdiError(_unknown(reg, name, kind))
    return out


def _unknown(reg: Registry, name: str, kind: str) -> str:
    """Name the broken spec files that may have been meant to define the device."""
    msg = f"CDI device {name} is not defined by any spec in {', '.join(reg.dirs)}"
    suspects = {p: e for p, e in reg.broken.items() if _declares(p, kind)} or reg.broken
    if suspects:
        msg += "; spec files that could not be used: " + "; ".join(
            f"{p}: {e}" for p, e in sorted(suspects.items()))
    return msg


def _declares(path: str, kind: str) -> bool:
    """Whether a (broken) file mentions kind, so its error is the one to report."""
    try:
        return kind in Path(path).read_text(errors="replace")
    except OSError:
        return False


def inject(spec: dict[str, Any], names: list[str], dirs: list[str] | None = None) -> None:
    """Apply the named devices' containerEdits (and their specs' own, once each) to an OCI
    spec dict. Raises CdiError naming the device (and the spec file) that cannot be used."""
    if not names:
        return
    reg = load(DEFAULT_SPEC_DIRS if dirs is None else dirs)
    applied: set[str] = set()
    specs: set[str] = set()
    for name, s, edits in resolve(reg, names):
        if name in applied:  # named twice, or by name and by =all
            continue
        applied.add(name)
        where = f"CDI device {name} (spec {s.path})"
        if s.path not in specs:
            specs.add(s.path)
            _apply(spec, s.edits, where)
        _apply(spec, edits, where)


def _apply(spec: dict[str, Any], edits: dict[str, Any], where: str) -> None:
    proc = spec.setdefault("process", {})
    env = proc.setdefault("env", [])
    for e in edits.get("env") or []:
        key = e.split("=", 1)[0] + "="
        env[:] = [x for x in env if not x.startswith(key)] + [e]
    linux = spec.setdefault("linux", {})
    for d in edits.get("deviceNodes") or []:
        node = _device_node(d, where)
        linux["devices"] = [x for x in linux.get("devices") or [] if x["path"] != node["path"]]
        linux["devices"].append(node)
        if node["type"] in ("c", "b"):
            rules = linux.setdefault("resources", {}).setdefault("devices", [])
            rules.append({"allow": True, "type": node["type"], "major": node["major"],
                          "minor": node["minor"], "access": d.get("permissions") or "rwm"})
    mounts = spec.setdefault("mounts", [])
    for m in edits.get("mounts") or []:
        dest = os.path.normpath(m["containerPath"])
        opts = list(m.get("options") or [])
        kind = m.get("type") or "bind"
        if kind == "bind" and not {"bind", "rbind"} & set(opts):
            opts.insert(0, "rbind")
        mounts[:] = [x for x in mounts if x.get("destination") != dest]
        mounts.append({"destination": dest, "type": kind, "source": m["hostPath"],
                       "options": opts})
    hooks = spec.setdefault("hooks", {}) if edits.get("hooks") else {}
    for h in edits.get("hooks") or []:
        entry = {k: h[k] for k in ("path", "args", "env", "timeout") if h.get(k) is not None}
        hooks.setdefault(h["hookName"], []).append(entry)
    gids = edits.get("additionalGIDs") or []
    if gids:
        user = proc.setdefault("user", {})
        user["additionalGids"] = list(dict.fromkeys([*user.get("additionalGids", []), *gids]))


def _device_node(d: dict[str, Any], where: str) -> dict[str, Any]:
    """An OCI linux.devices entry; what the spec leaves out is read from the host node."""
    kind = d.get("type")
    node: dict[str, Any] = {"path": d["path"]}
    mode = d.get("fileMode")
    if kind == "p" or (kind in ("c", "b", "u") and "major" in d and "minor" in d):
        node.update(type="c" if kind == "u" else kind, major=int(d.get("major", 0)),
                    minor=int(d.get("minor", 0)))
    else:
        host = d.get("hostPath") or d["path"]
        try:
            st = os.stat(host)
        except OSError as exc:
            raise CdiError(f"{where}: device node {host}: {exc.strerror}") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise CdiError(f"{where}: {host} is not a device node")
        node.update(type="c" if stat.S_ISCHR(st.st_mode) else "b",
                    major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
    if mode is not None:
        node["fileMode"] = int(mode)
    for k in ("uid", "gid"):
        if d.get(k) is not None:
            node[k] = int(d[k])
    return node


def annotation_devices(annotations: dict[str, str]) -> list[str]:
    """Device names from `cdi.k8s.io/<anything>` annotations (comma-separated values)."""
    out: list[str] = []
    for key, value in sorted(annotations.items()):
        if key.startswith(ANNOTATION_PREFIX):
            out.extend(n.strip() for n in value.split(",") if n.strip())
    return out
