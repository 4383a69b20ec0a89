"""Metadata store: schema versions, name reservation and id prefixes on real sqlite."""

import sqlite3

import pytest

from engine.store import MIGRATIONS, ContainerRecord, NameTaken, PodRecord, Store


def pod(id_: str, name: str = "web", attempt: int = 0) -> PodRecord:
    return PodRecord(id=id_, name=name, namespace="default", uid="u1", attempt=attempt,
                     state="SANDBOX_READY", created_ns=1, labels={"app": "web"})


def test_wal_and_schema_version(tmp_path):
    s = Store(tmp_path / "m.db")
    assert s.cx.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.schema_version == len(MIGRATIONS)
    s.close()
    assert Store(tmp_path / "m.db").schema_version == len(MIGRATIONS)


def test_newer_schema_refused(tmp_path):
    cx = sqlite3.connect(tmp_path / "m.db")
    cx.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    cx.close()
    with pytest.raises(RuntimeError, match="newer than this berthd"):
        Store(tmp_path / "m.db")


def test_roundtrip_and_name_reservation(tmp_path):
    s = Store(tmp_path / "m.db")
    s.pods.add(pod("aaa111"))
    assert s.pods.get("aaa111") == pod("aaa111")
    with pytest.raises(NameTaken, match="pod sandbox aaa111"):
        s.pods.add(pod("bbb222"))
    s.pods.add(pod("bbb222", attempt=1))
    s.containers.add(ContainerRecord(id="c1", pod_id="aaa111", name="app", attempt=0,
                                     image="img", image_id="sha256:x", created_ns=2))
    with pytest.raises(NameTaken, match="container c1"):
        s.containers.add(ContainerRecord(id="c2", pod_id="aaa111", name="app", attempt=0,
                                         image="img", image_id="sha256:x", created_ns=3))
    assert [c.id for c in s.containers.find(pod_id="aaa111")] == ["c1"]


def test_prefix_lookup_escapes_wildcards(tmp_path):
    s = Store(tmp_path / "m.db")
    s.pods.add(pod("abc123"))
    s.pods.add(pod("abd456", name="other"))
    assert s.pods.ids_with_prefix("ab") == ["abc123", "abd456"]
    assert s.pods.ids_with_prefix("abc") == ["abc123"]
    assert s.pods.ids_with_prefix("a%") == []
    assert s.pods.ids_with_prefix("a_c") == []


def test_failed_transaction_leaves_nothing(tmp_path):
    s = Store(tmp_path / "m.db")
    with pytest.raises(ZeroDivisionError), s.tx() as cx:
        cx.execute("INSERT INTO images VALUES ('x', '[]', '[]', 0, '{}')")
        raise ZeroDivisionError
    assert s.images.get("x") is None
