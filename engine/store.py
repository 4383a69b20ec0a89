"""Object metadata in sqlite3 (WAL): what kubelet and Docker clients asked for, kept across
daemon restarts."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

# Who a pod or container belongs to, as containerd's namespaces keep clients apart: kubelet's
# CRI never lists, stops or collects a Docker client's objects, nor Docker kubelet's.
K8S = "k8s"
DOCKER = "docker"


class NameTaken(Exception):
    """A CRI name is already reserved; the message names the holder."""


@dataclass
class PodRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    created_ns: int
    config: bytes = b""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    owner: str = K8S
    ports: list[dict[str, Any]] = field(default_factory=list)  # PortMapping fields, for CNI


@dataclass
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    attempt: int
    image: str
    image_id: str
    created_ns: int
    config: bytes = b""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    owner: str = K8S


@dataclass
class ImageRecord:
    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VolumeRecord:
    """A named (or anonymous) local volume; its data is `<state_dir>/volumes/<id>/_data`."""

    id: str  # the volume's name
    driver: str
    created_ns: int
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # options, anonymous


@dataclass
class NetworkRecord:
    """A user-defined Docker network: its bridge, subnet and conflist (engine/networks.py)."""

    id: str
    name: str
    driver: str
    created_ns: int
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # subnet, gateway, bridge, options...


# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE pods (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL, uid TEXT NOT NULL,
        attempt INTEGER NOT NULL, state TEXT NOT NULL, created_ns INTEGER NOT NULL,
        config BLOB NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
        extra TEXT NOT NULL,
        UNIQUE (name, namespace, uid, attempt)
    );
    CREATE TABLE containers (
        id TEXT PRIMARY KEY, pod_id TEXT NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL,
        image TEXT NOT NULL, image_id TEXT NOT NULL, created_ns INTEGER NOT NULL,
        config BLOB NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
        extra TEXT NOT NULL,
        UNIQUE (pod_id, name, attempt)
    );
    CREATE INDEX containers_by_pod ON containers (pod_id);
    CREATE TABLE images (
        id TEXT PRIMARY KEY, repo_tags TEXT NOT NULL, repo_digests TEXT NOT NULL,
        size INTEGER NOT NULL, extra TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE pods ADD COLUMN owner TEXT NOT NULL DEFAULT 'k8s';
    ALTER TABLE pods ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE containers ADD COLUMN owner TEXT NOT NULL DEFAULT 'k8s';
    CREATE INDEX containers_by_owner ON containers (owner);
    """,
    """
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY, driver TEXT NOT NULL, created_ns INTEGER NOT NULL,
        labels TEXT NOT NULL, extra TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, driver TEXT NOT NULL,
        created_ns INTEGER NOT NULL, labels TEXT NOT NULL, extra TEXT NOT NULL
    );
    """,
]

R = TypeVar("R", PodRecord, ContainerRecord, ImageRecord, VolumeRecord, NetworkRecord)
_JSON_FIELDS = {"labels", "annotations", "extra", "repo_tags", "repo_digests", "ports"}


class Table(Generic[R]):
    """Typed CRUD over one table, written through to sqlite and read from memory.

    berthd is the only writer, so after one load every read (kubelet lists every second) is a
    dict lookup. Records handed out are copies: a caller's edits land only through `put`.
    """

    def __init__(self, db: Store, name: str, kind: type[R],
                 holder: Callable[[sqlite3.Connection, R], str] | None = None) -> None:
        self.db = db
        self.name = name
        self.kind: type[R] = kind
        self.holder: Callable[[sqlite3.Connection, R], str] | None = holder
        self.columns = [f.name for f in fields(kind)]
        self._cache: dict[str, R] | None = None
        self.generation = 0  # bumped by every write, so lists can cache what they built

    def _all(self) -> dict[str, R]:
        if self._cache is None:
            order = " ORDER BY created_ns" if "created_ns" in self.columns else ""
            rows = self.db.cx.execute(f"SELECT * FROM {self.name}{order}")
            self._cache = {rec.id: rec for rec in map(self._rec, rows)}
        return self._cache

    def _row(self, rec: R) -> list[Any]:
        data = asdict(rec)
        return [json.dumps(data[c]) if c in _JSON_FIELDS else data[c] for c in self.columns]

    def _rec(self, row: sqlite3.Row) -> R:
        data = {c: json.loads(row[c]) if c in _JSON_FIELDS else row[c] for c in self.columns}
        return self.kind(**data)

    def add(self, rec: R) -> None:
        """Insert; a unique-name clash becomes NameTaken naming the current holder."""
        marks = ", ".join("?" for _ in self.columns)
        try:
            with self.db.tx() as cx:
                cx.execute(f"INSERT INTO {self.name} ({', '.join(self.columns)}) "
                           f"VALUES ({marks})", self._row(rec))
        except sqlite3.IntegrityError:
            holder = self.holder(self.db.cx, rec) if self.holder else "an existing record"
            raise NameTaken(holder) from None
        self._all()[rec.id] = _copy(rec)
        self.generation += 1

    def put(self, rec: R) -> None:
        marks = ", ".join("?" for _ in self.columns)
        with self.db.tx() as cx:
            cx.execute(f"INSERT OR REPLACE INTO {self.name} ({', '.join(self.columns)}) "
                       f"VALUES ({marks})", self._row(rec))
        self._all()[rec.id] = _copy(rec)
        self.generation += 1

    def get(self, id_: str) -> R | None:
        rec = self._all().get(id_)
        return _copy(rec) if rec is not None else None

    def peek(self, id_: str) -> R | None:
        """The cached record itself, for hot read paths (lists): never modify it. A write
        replaces it with a new object, so a caller may key what it built on its identity."""
        return self._all().get(id_)

    def find(self, **where: Any) -> list[R]:
        """Equality filters on plain fields, in creation order."""
        return [_copy(rec) for rec in self._all().values()
                if all(getattr(rec, k) == v for k, v in where.items())]

    def scan(self) -> list[R]:
        """The cached records themselves, for hot read paths (lists): never modify them."""
        return list(self._all().values())

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """Short ids as crictl sends them resolve to full ids."""
        return sorted(i for i in self._all() if i.startswith(prefix))

    def owner_of(self, id_: str) -> str:
        """Pods and containers carry an owner; other tables belong to everyone."""
        return str(getattr(self._all().get(id_), "owner", K8S))

    def owned(self, owner: str) -> list[R]:
        """The cached records of one owner, for hot read paths: never modify them."""
        return [rec for rec in self._all().values() if getattr(rec, "owner", K8S) == owner]

    def delete(self, id_: str) -> bool:
        with self.db.tx() as cx:
            gone = cx.execute(f"DELETE FROM {self.name} WHERE id = ?", (id_,)).rowcount > 0
        self._all().pop(id_, None)
        self.generation += 1
        return gone


def _copy(rec: R) -> R:
    """One level deep: enough that edits to a returned record's dicts stay off the cache."""
    return replace(rec, **{f.name: copy.copy(getattr(rec, f.name)) for f in fields(rec)
                           if isinstance(getattr(rec, f.name), dict | list)})


def _pod_holder(cx: sqlite3.Connection, rec: PodRecord) -> str:
    row = cx.execute("SELECT id FROM pods WHERE name=? AND namespace=? AND uid=? AND attempt=?",
                     (rec.name, rec.namespace, rec.uid, rec.attempt)).fetchone()
    return f"pod sandbox {row[0]}" if row else "another pod sandbox"


def _container_holder(cx: sqlite3.Connection, rec: ContainerRecord) -> str:
    row = cx.execute("SELECT id FROM containers WHERE pod_id=? AND name=? AND attempt=?",
                     (rec.pod_id, rec.name, rec.attempt)).fetchone()
    return f"container {row[0]}" if row else "another container"


def _network_holder(cx: sqlite3.Connection, rec: NetworkRecord) -> str:
    row = cx.execute("SELECT id FROM networks WHERE name=?", (rec.name,)).fetchone()
    return f"network {row[0]}" if row else "another network"


class Store:
    """The metadata database; one connection, used from the daemon's event loop thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cx = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.cx.row_factory = sqlite3.Row
        self.cx.execute("PRAGMA journal_mode=WAL")
        self.cx.execute("PRAGMA synchronous=NORMAL")
        self.cx.execute("PRAGMA foreign_keys=ON")
        self.migrate()
        self.pods: Table[PodRecord] = Table(self, "pods", PodRecord, _pod_holder)
        self.containers: Table[ContainerRecord] = Table(
            self, "containers", ContainerRecord, _container_holder)
        self.images: Table[ImageRecord] = Table(self, "images", ImageRecord)
        self.volumes: Table[VolumeRecord] = Table(self, "volumes", VolumeRecord)
        self.networks: Table[NetworkRecord] = Table(self, "networks", NetworkRecord,
                                                    _network_holder)

    @property
    def schema_version(self) -> int:
        return int(self.cx.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring an older database up to date; refuse one from a newer Berth."""
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"metadata database {self.path} has schema {version}, newer than this berthd "
                f"understands ({len(MIGRATIONS)}); upgrade berthd")
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.tx() as cx:
                for stmt in filter(str.strip, script.split(";")):
                    cx.execute(stmt)
                cx.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything in the block lands, or nothing does."""
        self.cx.execute("BEGIN IMMEDIATE")
        try:
            yield self.cx
        except BaseException:
            self.cx.execute("ROLLBACK")
            raise
        self.cx.execute("COMMIT")

    def close(self) -> None:
        self.cx.close()
