"""host-local IPAM: one lease file per IP under dataDir/<network>, serialised by flock."""

from __future__ import annotations

import fcntl
import os

from cni_plugins import lean, skel
from cni_plugins.skel import Args, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from cni_plugins.skel import Handler

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


class Range:
    """One allocatable range; start/end default to the subnet minus network, gateway, broadcast."""

    def __init__(self, raw: dict[str, Any]) -> None:
        try:
            self.bits, value, self.plen = lean.parse_cidr(raw["subnet"])
            self.net = lean.network(self.bits, value, self.plen)
            size = 1 << (self.bits - self.plen)
            last = self.net + size - (2 if self.bits == 32 else 1)
            self.gateway = self._ip(raw.get("gateway"), self.net + 1)
            self.start = self._ip(raw.get("rangeStart"), self.net + 1)
            self.end = self._ip(raw.get("rangeEnd"), last)
        except (KeyError, ValueError) as exc:
            raise CNIError(skel.E_INVALID_CONFIG, f"invalid IPAM range: {exc}") from exc
        inside = self.net <= self.start <= self.end < self.net + size
        if not inside:
            raise CNIError(skel.E_INVALID_CONFIG, f"range start/end not inside {raw['subnet']}")

    def _ip(self, text: str | None, default: int) -> int:
        if not text:
            return default
        bits, value = lean.parse_ip(text)
        if bits != self.bits:
            raise ValueError(f"{text} is not in the subnet's family")
        return value

    def fmt(self, value: int) -> str:
        return lean.fmt_ip(self.bits, value)

    def contains(self, value: int) -> bool:
        return self.start <= value <= self.end

    def candidates(self, after: int | None) -> Iterator[int]:
        """Round-robin from just past the last reservation, like the reference allocator."""
        begin = after + 1 if after is not None and self.contains(after) else self.start
        size = self.end - self.start + 1
        for i in range(size):
            yield self.start + (begin - self.start + i) % size


def range_sets(ipam: dict[str, Any]) -> list[list[Range]]:
    """Accept both `ranges` (list of range sets) and the legacy top-level `subnet`."""
    sets = ipam.get("ranges")
    if not sets and ipam.get("subnet"):
        sets = [[ipam]]
    if not sets:
        raise CNIError(skel.E_INVALID_CONFIG, "IPAM config has no ranges")
    return [[Range(r) for r in rset] for rset in sets]


class Store:
    """Lease directory of one network; every mutation happens under an exclusive flock."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir, network)
        os.makedirs(self.dir, exist_ok=True)
        self.lock_fd = -1

    def __enter__(self) -> Store:
        path = os.path.join(self.dir, "lock")
        self.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.lock_fd)

    def reserve(self, ip: str, owner: str, set_idx: int) -> bool:
        try:
            path = os.path.join(self.dir, ip)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(owner)
        self._write(f"last_reserved_ip.{set_idx}", ip)
        return True

    def last_reserved(self, set_idx: int) -> int | None:
        try:
            with open(os.path.join(self.dir, f"last_reserved_ip.{set_idx}")) as f:
                return lean.parse_ip(f.read().strip())[1]
        except (OSError, ValueError):
            return None

    def leases(self) -> list[tuple[str, str]]:
        out = []
        for name in os.listdir(self.dir):
            if name == "lock" or name.startswith(("last_reserved_ip", ".")):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out.append((name, f.read()))
            except FileNotFoundError:
                continue
        return out

    def release(self, ip: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, ip))
        except FileNotFoundError:
            return

    def _write(self, name: str, text: str) -> None:
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.dir, name))


def _owner_fields(content: str) -> tuple[str, str]:
    lines = [ln.strip() for ln in content.strip().splitlines()] + ["", ""]
    return lines[0], lines[1]


def _owned_by(content: str, cid: str, ifname: str) -> bool:
    owner_cid, owner_if = _owner_fields(content)
    return owner_cid == cid and owner_if in (ifname, "")


def _store(args: Args) -> Store:
    ipam = args.conf.get("ipam", {})
    name = args.conf.get("name")
    if not name or "/" in name:
        raise CNIError(skel.E_INVALID_CONFIG, "network config needs a plain name")
    return Store(ipam.get("dataDir") or DEFAULT_DATA_DIR, name)


def cmd_add(args: Args) -> dict[str, Any]:
    ipam = args.conf.get("ipam", {})
    sets = range_sets(ipam)
    owner = f"{args.container_id}\r\n{args.ifname}"
    ips: list[dict[str, Any]] = []
    # the `ips` capability: addresses the runtime asks for (docker --ip), one per range set
    wanted = [str(ip).split("/")[0] for ip in (args.conf.get("runtimeConfig") or {}).get("ips", [])]
    with _store(args) as store:
        held = [ip for ip, c in store.leases() if _owned_by(c, args.container_id, args.ifname)]
        for idx, rset in enumerate(sets):
            if wanted:
                got = _request(store, rset, idx, owner, held, wanted)
            else:
                got = _allocate(store, rset, idx, owner, held)
            if got is None:
                for done in ips:
                    store.release(done["address"].split("/")[0])
                raise CNIError(skel.E_TRY_AGAIN, f"no IP addresses available in range set {idx}")
            rng, ip = got
            ips.append({"address": f"{ip}/{rng.plen}", "gateway": rng.fmt(rng.gateway)})
    result: dict[str, Any] = {"ips": ips, "routes": list(ipam.get("routes", []))}
    if ipam.get("dns"):
        result["dns"] = ipam["dns"]
    return result


def _allocate(
    store: Store, rset: list[Range], idx: int, owner: str, held: list[str]
) -> tuple[Range, str] | None:
    for rng in rset:
        for text in held:
            bits, value = lean.parse_ip(text)
            if bits == rng.bits and rng.contains(value):
                return rng, text  # idempotent re-ADD of the same container/ifname
    last = store.last_reserved(idx)
    for rng in rset:
        for value in rng.candidates(last):
            if value == rng.gateway:
                continue
            ip = rng.fmt(value)
            if store.reserve(ip, owner, idx):
                return rng, ip
    return None


def _request(
    store: Store, rset: list[Range], idx: int, owner: str, held: list[str], wanted: list[str]
) -> tuple[Range, str] | None:
    """A requested address anywhere in a range's subnet but its gateway: reserved, or refused."""
    for rng in rset:
        for text in wanted:
            bits, value = lean.parse_ip(text)
            size = 1 << (rng.bits - rng.plen)
            if bits != rng.bits or not rng.net < value < rng.net + size - 1:
                continue
            if value == rng.gateway:
                raise CNIError(skel.E_INVALID_CONFIG, f"requested IP {text} is the gateway")
            if text in held or store.reserve(text, owner, idx):
                return rng, text
            raise CNIError(skel.E_TRY_AGAIN, f"requested IP address {text} is already in use")
    raise CNIError(skel.E_INVALID_CONFIG, f"requested IPs {wanted} are in no range of set {idx}")


def cmd_del(args: Args) -> None:
    with _store(args) as store:
        for ip, content in store.leases():
            if _owned_by(content, args.container_id, args.ifname):
                store.release(ip)


def cmd_check(args: Args) -> None:
    leases = _store(args).leases()
    if not any(_owned_by(c, args.container_id, args.ifname) for _ip, c in leases):
        raise CNIError(skel.E_UNKNOWN_CONTAINER, f"no IP reserved for {args.container_id}")


def cmd_gc(args: Args) -> None:
    """Release every lease whose attachment the runtime no longer lists as valid (CNI 1.1)."""
    valid = {
        (a.get("containerID"), a.get("ifname"))
        for a in args.conf.get("cni.dev/valid-attachments", [])
    }
    with _store(args) as store:
        for ip, content in store.leases():
            if _owner_fields(content) not in valid:
                store.release(ip)


def cmd_status(args: Args) -> None:
    store = _store(args)
    if not os.access(store.dir, os.W_OK):
        raise CNIError(skel.E_NOT_AVAILABLE, f"{store.dir} is not writable")


HANDLERS: dict[str, Handler] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status
}


def main() -> int:
    return skel.run(HANDLERS, "host-local")
