"""runtime/cdi.py on spec files the test writes: parsing (JSON, YAML), resolution, the edits
applied to an OCI spec, and a clear error naming the device and the file for each bad spec."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from runtime import cdi


def _node(tmp: Path, name: str, major: int = 1, minor: int = 7) -> str:
    """A char device node the test owns (a /dev/full twin), never a real host device."""
    path = tmp / name
    os.mknod(path, stat.S_IFCHR | 0o640, os.makedev(major, minor))
    return str(path)


def _spec(kind: str = "example.com/gpu", version: str = "0.6.0", **extra: Any
          ) -> dict[str, Any]:
    return {"cdiVersion": version, "kind": kind, **extra}


def _write(d: Path, name: str, doc: dict[str, Any] | str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else (
        json.dumps(doc) if name.endswith(".json") else _yaml(doc))
    (d / name).write_text(text)
    return str(d / name)


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc)


def _oci() -> dict[str, Any]:
    return {"process": {"env": ["PATH=/bin", "KEEP=1"], "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"devices": [], "resources": {"devices": [{"allow": False,
                                                               "access": "rwm"}]}}}


@pytest.fixture
def dirs(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "etc-cdi"), str(tmp_path / "run-cdi")]


def test_yaml_spec_edits_land_in_the_oci_spec(tmp_path: Path, dirs: list[str]) -> None:
    host = _node(tmp_path, "gpu0")
    lib = tmp_path / "libfake.so"
    lib.write_text("fake")
    _write(Path(dirs[0]), "vendor.yaml", _spec(
        containerEdits={"env": ["FAKE_DRIVER=1"], "mounts": [
            {"hostPath": str(lib), "containerPath": "/usr/lib/libfake.so",
             "options": ["ro", "nosuid"]}]},
        devices=[{"name": "gpu0", "containerEdits": {
            "env": ["FAKE_VISIBLE=0", "KEEP=2"],
            "deviceNodes": [{"path": "/dev/fakegpu0", "hostPath": host, "permissions": "rw"}],
            "hooks": [{"hookName": "createContainer", "path": "/bin/true",
                       "args": ["true", "x"]}],
            "additionalGIDs": [44]}}]))
    spec = _oci()
    cdi.inject(spec, ["example.com/gpu=gpu0"], dirs)
    env = spec["process"]["env"]
    assert "FAKE_DRIVER=1" in env and "FAKE_VISIBLE=0" in env
    assert "KEEP=2" in env and "KEEP=1" not in env
    assert spec["linux"]["devices"] == [
        {"path": "/dev/fakegpu0", "type": "c", "major": 1, "minor": 7, "fileMode": 0o640}]
    assert {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rw"} in \
        spec["linux"]["resources"]["devices"]
    assert spec["mounts"][-1] == {"destination": "/usr/lib/libfake.so", "type": "bind",
                                  "source": str(lib), "options": ["rbind", "ro", "nosuid"]}
    assert spec["hooks"] == {"createContainer": [{"path": "/bin/true", "args": ["true", "x"]}]}
    assert spec["process"]["user"]["additionalGids"] == [44]


def test_json_spec_with_explicit_numbers_and_all(tmp_path: Path, dirs: list[str]) -> None:
    devices = [{"name": f"d{i}", "containerEdits": {"deviceNodes": [
        {"path": f"/dev/fake{i}", "type": "c", "major": 240, "minor": i, "fileMode": 0o600,
         "uid": 0, "gid": 0}]}} for i in range(3)]
    _write(Path(dirs[1]), "v.json", _spec("example.com/acc", "0.8.0", devices=devices))
    spec = _oci()
    cdi.inject(spec, ["example.com/acc=all", "example.com/acc=d1"], dirs)
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/fake0", "/dev/fake1",
                                                             "/dev/fake2"]
    assert spec["linux"]["devices"][0]["major"] == 240


def test_later_dir_overrides_earlier(tmp_path: Path, dirs: list[str]) -> None:
    for d, value in zip(dirs, ("etc", "run"), strict=True):
        _write(Path(d), "v.yaml", _spec(devices=[{"name": "x", "containerEdits": {
            "env": [f"FROM={value}"]}}]))
    spec = _oci()
    cdi.inject(spec, ["example.com/gpu=x"], dirs)
    assert "FROM=run" in spec["process"]["env"] and "FROM=etc" not in spec["process"]["env"]


def test_annotation_devices() -> None:
    got = cdi.annotation_devices({"cdi.k8s.io/b": "example.com/gpu=1, example.com/gpu=2",
                                  "cdi.k8s.io/a": "example.com/net=eth",
                                  "other": "example.com/gpu=9"})
    assert got == ["example.com/net=eth", "example.com/gpu=1", "example.com/gpu=2"]


@pytest.mark.parametrize("name", ["gpu0", "example.com/gpu", "example.com/gpu=", "/gpu=x",
                                  "example.com/gpu=-x"])
def test_names_that_are_not_qualified(name: str, dirs: list[str]) -> None:
    with pytest.raises(cdi.CdiError, match="not a fully qualified name"):
        cdi.inject(_oci(), [name], dirs)


def test_unknown_device_names_the_device_and_dirs(dirs: list[str]) -> None:
    _write(Path(dirs[0]), "v.yaml", _spec(devices=[{"name": "a", "containerEdits": {
        "env": ["A=1"]}}]))
    with pytest.raises(cdi.CdiError) as err:
        cdi.inject(_oci(), ["example.com/gpu=b"], dirs)
    assert "example.com/gpu=b" in str(err.value) and dirs[0] in str(err.value)


BROKEN: list[tuple[str, str, str]] = [
    ("bad.yaml", "cdiVersion: [0.6.0\nkind: example.com/gpu\n", "not valid YAML"),
    ("bad.json", '{"cdiVersion": "0.6.0", "kind": "example.com/gpu", ', "not valid JSON"),
    ("new.json", json.dumps(_spec(version="0.9.0", devices=[{"name": "a", "containerEdits": {
        "env": ["A=1"]}}])), "cdiVersion 0.9.0 is not supported"),
    ("kind.json", json.dumps(_spec(kind="example.com", devices=[])), "kind 'example.com'"),
    ("nodev.json", json.dumps(_spec(devices=[])), "defines no devices"),
    ("node.json", json.dumps(_spec(devices=[{"name": "a", "containerEdits": {
        "deviceNodes": [{"path": "dev/rel"}]}}])), "has no absolute path"),
    ("hook.json", json.dumps(_spec(devices=[{"name": "a", "containerEdits": {
        "hooks": [{"hookName": "sometime", "path": "/bin/true"}]}}])), "hookName"),
    ("mount.json", json.dumps(_spec(devices=[{"name": "a", "containerEdits": {
        "mounts": [{"containerPath": "/x"}]}}])), "needs hostPath and containerPath"),
    ("env.json", json.dumps(_spec(devices=[{"name": "a", "containerEdits": {
        "env": ["NOEQUALS"]}}])), "not KEY=VALUE"),
]


@pytest.mark.parametrize(("fname", "text", "why"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_spec_is_named(fname: str, text: str, why: str, dirs: list[str]) -> None:
    path = _write(Path(dirs[0]), fname, text)
    with pytest.raises(cdi.CdiError) as err:
        cdi.inject(_oci(), ["example.com/gpu=a"], dirs)
    msg = str(err.value)
    assert "example.com/gpu=a" in msg and path in msg and why in msg, msg


def test_a_broken_file_does_not_hide_other_vendors(dirs: list[str]) -> None:
    _write(Path(dirs[0]), "broken.yaml", "kind: [\n")
    _write(Path(dirs[0]), "good.yaml", _spec("other.org/nic", devices=[
        {"name": "n", "containerEdits": {"env": ["NIC=1"]}}]))
    spec = _oci()
    cdi.inject(spec, ["other.org/nic=n"], dirs)
    assert "NIC=1" in spec["process"]["env"]


def test_missing_host_node_names_device_and_file(tmp_path: Path, dirs: list[str]) -> None:
    path = _write(Path(dirs[0]), "v.yaml", _spec(devices=[{"name": "a", "containerEdits": {
        "deviceNodes": [{"path": "/dev/gone", "hostPath": str(tmp_path / "gone")}]}}]))
    with pytest.raises(cdi.CdiError) as err:
        cdi.inject(_oci(), ["example.com/gpu=a"], dirs)
    assert "example.com/gpu=a" in str(err.value) and path in str(err.value)
    assert "No such file" in str(err.value)


def test_same_device_twice_in_one_dir_is_refused(dirs: list[str]) -> None:
    for f in ("a.yaml", "b.yaml"):
        _write(Path(dirs[0]), f, _spec(devices=[{"name": "x", "containerEdits": {
            "env": [f"F={f}"]}}]))
    spec = _oci()
    cdi.inject(spec, ["example.com/gpu=x"], dirs)  # the first file keeps it...
    reg = cdi.load(dirs)
    assert "also defined in" in reg.broken[str(Path(dirs[0]) / "b.yaml")]  # ...and b is named
