"""Volume endpoints through docker-py: create, list with filters, inspect, remove, prune."""

from __future__ import annotations

import uuid

import docker
import pytest


@pytest.fixture
def vname() -> str:
    return f"vol-{uuid.uuid4().hex[:8]}"


def test_create_inspect_list_remove(dclient, vname: str) -> None:
    vol = dclient.volumes.create(vname, labels={"team": "a"})
    assert vol.name == vname
    info = dclient.api.inspect_volume(vname)
    assert info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Labels"] == {"team": "a"} and info["Mountpoint"].endswith(f"/{vname}/_data")
    assert info["CreatedAt"].endswith("Z")
    # creating it again is not an error (dockerd answers the existing volume)
    assert dclient.volumes.create(vname).name == vname
    names = [v["Name"] for v in dclient.api.volumes(filters={"label": "team=a"})["Volumes"]]
    assert vname in names
    assert vname not in [v["Name"] for v in
                         dclient.api.volumes(filters={"label": "team=b"})["Volumes"]]
    dclient.api.remove_volume(vname)
    with pytest.raises(docker.errors.NotFound):
        dclient.api.inspect_volume(vname)
    # force: a missing volume is fine (docker-py drops the force flag, so say it raw)
    resp = dclient.api.delete(dclient.api._url(f"/volumes/{vname}"), params={"force": "1"})
    assert resp.status_code == 204


@pytest.mark.parametrize(("spec", "status"), [
    ({"Name": "../escape"}, 400), ({"Name": "a/b"}, 400), ({"Name": ".hidden"}, 400),
    ({"Name": "ok-name", "Driver": "nfs-magic"}, 400),
    ({"Name": "ok-name", "DriverOpts": {"type": "tmpfs"}}, 400),
    ({"Name": 5}, 400), ({"Name": "ok-name", "Labels": ["x"]}, 400),
])
def test_bad_volume_specs(dclient, spec: dict, status: int) -> None:
    api = dclient.api
    resp = api.post(api._url("/volumes/create"), json=spec)
    assert resp.status_code == status, resp.text
    assert resp.json()["message"]
    assert "ok-name" not in [v["Name"] for v in api.volumes()["Volumes"] or []]


def test_prune_takes_unused_volumes(dclient, vname: str) -> None:
    dclient.volumes.create(vname)
    keep = dclient.volumes.create(f"{vname}-keep", labels={"keep": "1"})
    out = dclient.api.prune_volumes(filters={"label": "keep"})
    assert keep.name in out["VolumesDeleted"] and vname not in out["VolumesDeleted"]
    out = dclient.api.prune_volumes()
    assert vname in out["VolumesDeleted"]
