"""vxlan plugin: pods on many nodes in one flat network, each node a subnet of a cluster CIDR.

ADD sets up the node side (vxlan_node) and then delegates the pod's own attachment to a bridge
plugin (ours, or the reference one) with host-local IPAM over the node's subnet, the way
flannel's CNI plugin delegates. One flock per network and node serialises ADD/DEL/GC, so the
last pod's DEL cannot tear the node down under a concurrent ADD.

State under dataDir/<network>/: `node.json` lists what ADD created on the node (in order) and
`pods/<container id>.<ifname>` holds each attached pod's result. A repeated ADD whose pod
interface still exists returns the stored result and changes nothing; the last DEL undoes
node.json. What existed before the first ADD (a bridge, an address, an ARP entry) is used but
never removed.
"""

from __future__ import annotations

import fcntl
import os

from cni_plugins import delegate, lean, nl, skel, vxlan_node
from cni_plugins.skel import Args, CNIError
from cni_plugins.vxlan_conf import NodeConf, delegate_conf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni_plugins.skel import Handler
    from cni_plugins.vxlan_node import Entry

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class State:
    """The node record and pod records of one network on this node, under its lock."""

    def __init__(self, node: NodeConf) -> None:
        self.dir = os.path.join(node.data_dir, node.name)
        self.pods_dir = os.path.join(self.dir, "pods")
        self.lock_fd = -1

    def __enter__(self) -> State:
        os.makedirs(self.pods_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.dir, "lock")
        self.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.lock_fd)

    def created(self) -> list[Entry]:
        got = self._read(os.path.join(self.dir, "node.json"))
        return list(got.get("created", [])) if got else []

    def save_created(self, created: list[Entry]) -> None:
        path = os.path.join(self.dir, "node.json")
        if created:
            self._write(path, {"created": created})
        else:
            _unlink(path)

    def pod(self, args: Args) -> dict[str, Any] | None:
        return self._read(self._pod_path(args.container_id, args.ifname))

    def put_pod(self, args: Args, record: dict[str, Any]) -> None:
        self._write(self._pod_path(args.container_id, args.ifname), record)

    def drop_pod(self, cid: str, ifname: str) -> None:
        _unlink(self._pod_path(cid, ifname))

    def pods(self) -> list[tuple[str, str]]:
        """(container id, ifname) of every attached pod."""
        out = []
        for name in os.listdir(self.pods_dir):
            cid, dot, ifname = name.rpartition(".")
            if dot and not name.startswith("."):
                out.append((cid, ifname))
        return out

    def _pod_path(self, cid: str, ifname: str) -> str:
        if not cid or not set(cid) <= _ID_CHARS or cid[0] in ".-":
            raise CNIError(skel.E_INVALID_ENV, f"invalid CNI_CONTAINERID {cid!r}")
        if not ifname or "/" in ifname or ifname.startswith("."):
            raise CNIError(skel.E_INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}")
        return os.path.join(self.pods_dir, f"{cid}.{ifname}")

    @staticmethod
    def _read(path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                got = lean.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CNIError(skel.E_IO, f"corrupt state file {path}: {exc}") from None
        return got if isinstance(got, dict) else None

    @staticmethod
    def _write(path: str, obj: dict[str, Any]) -> None:
        """Write-and-rename: a crash leaves the old record or the new one, never half of one."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lean.dumps(obj))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


def _node(args: Args) -> NodeConf:
    return NodeConf(args.conf)


def _pod_link_exists(netns: str, ifname: str) -> bool:
    try:
        with nl.in_netns(netns), nl.Netlink() as pod:
            return pod.get_link(ifname) is not None
    except OSError:
        return False


def _delegate(args: Args, command: str, conf: dict[str, Any]) -> dict[str, Any] | None:
    return delegate.call(str(conf["type"]), command, args, lean.dumps(conf).encode())


def _teardown_if_idle(state: State) -> None:
    """The last pod gone: undo what ADD made on the node, and only that."""
    if state.pods():
        return
    created = state.created()
    try:
        with nl.Netlink() as sock:
            vxlan_node.teardown(sock, created)
    finally:
        state.save_created(created)


def cmd_add(args: Args) -> dict[str, Any]:
    node = _node(args)
    if not os.path.exists(args.netns):
        raise CNIError(skel.E_INVALID_ENV, f"netns {args.netns} does not exist")
    with State(node) as state:
        record = state.pod(args)
        if record is not None and _pod_link_exists(args.netns, args.ifname):
            return dict(record["result"])  # idempotent: the same answer, nothing touched
        created = state.created()
        try:
            try:
                with nl.Netlink() as sock:
                    mtu = vxlan_node.ensure(sock, node, created)
            finally:
                state.save_created(created)
            conf = delegate_conf(args.conf, node, mtu)
            result = _delegate(args, "ADD", conf) or {}
            state.put_pod(args, {"result": result, "netns": args.netns})
        except BaseException:
            _teardown_if_idle(state)  # nothing half-made is left for a pod that never came
            raise
    return result


def cmd_del(args: Args) -> None:
    """Idempotent: a pod we never attached, or a DEL repeated, still succeeds."""
    node = _node(args)
    with State(node) as state:
        record = state.pod(args)
        conf = delegate_conf(args.conf, node, 0)
        if record is not None and "prevResult" not in conf:
            conf["prevResult"] = record["result"]
        _delegate(args, "DEL", conf)
        state.drop_pod(args.container_id, args.ifname)
        _teardown_if_idle(state)


def cmd_check(args: Args) -> None:
    node = _node(args)
    if skel.prev_result(args) is None:
        raise CNIError(skel.E_INVALID_CONFIG, "CHECK needs prevResult")
    with State(node) as state:
        if state.pod(args) is None:
            raise CNIError(skel.E_UNKNOWN_CONTAINER, f"{args.container_id} is not attached")
        with nl.Netlink() as sock:
            vxlan_node.check(sock, node)
        conf = delegate_conf(args.conf, node, _mtu(node))
        _delegate(args, "CHECK", conf)


def _mtu(node: NodeConf) -> int:
    with nl.Netlink() as sock:
        link = sock.get_link(node.bridge)
    return link.mtu if link else 0


def cmd_gc(args: Args) -> None:
    """CNI 1.1 GC: forget pods the runtime no longer lists, then the delegate collects its own
    (leases); a node left without pods is torn down as by the last DEL."""
    node = _node(args)
    valid = {
        (a.get("containerID"), a.get("ifname"))
        for a in args.conf.get("cni.dev/valid-attachments", [])
    }
    with State(node) as state:
        for cid, ifname in state.pods():
            if (cid, ifname) not in valid:
                state.drop_pod(cid, ifname)
        _delegate(args, "GC", delegate_conf(args.conf, node, 0))
        _teardown_if_idle(state)


def cmd_status(args: Args) -> None:
    """Ready when this node holds localIP and the delegate is ready."""
    node = _node(args)
    try:
        with nl.Netlink() as sock:
            vxlan_node.underlay_link(sock, node)
    except CNIError as exc:
        raise CNIError(skel.E_NOT_AVAILABLE, exc.msg) from None
    _delegate(args, "STATUS", delegate_conf(args.conf, node, 0))


HANDLERS: dict[str, Handler] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status
}


def main() -> int:
    return skel.run(HANDLERS, "vxlan")
