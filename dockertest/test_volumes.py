"""Volumes in containers: named volumes made on first use, data that outlives containers and a
berthd restart, the image's content copied into an empty volume, anonymous volumes from an
image's VOLUME and `rm -v`, `volume rm` while in use, bad names; no mount left on the host."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockertest.harness import Daemon

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def vols(dk: Daemon) -> Iterator[list[str]]:
    """Volume names the test uses (unique per test and daemon); removed afterwards."""
    names: list[str] = []
    yield names
    for n in names:
        try:
            dk.api.remove_volume(n, force=True)
        except docker.errors.APIError:
            continue


def _name(vols: list[str], what: str) -> str:
    name = f"dtv-{what}-{uuid.uuid4().hex[:8]}"
    vols.append(name)
    return name


def _run(dk: Daemon, cmd: str, binds: dict[str, dict[str, str]]) -> str:
    """Run `sh -c cmd` in busybox to its end with these volumes and return its stdout (an end
    mark makes every output non-empty, which Daemon.output waits for)."""
    out = dk.output(["sh", "-c", cmd + "; echo ="], volumes=binds).decode()
    assert out.endswith("=\n"), out
    return out[:-2]


def _host_mounts(*words: str) -> list[str]:
    """Host mount table lines naming any of `words` (a volume's data is mounted only inside
    the container's own mount namespace, never on the host)."""
    return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if any(w in ln for w in words)]


def _volume_names(dk: Daemon) -> set[str]:
    return {v["Name"] for v in dk.api.volumes()["Volumes"] or []}


def test_named_volume_outlives_containers_and_berthd(dk: Daemon, vols: list[str],
                                                     request: pytest.FixtureRequest) -> None:
    """`-v name:/data` creates the volume; what one container wrote the next one reads after the
    first is removed, and again after berthd restarts (dockerd is the fixture's peer and is not
    restarted: the restart half runs on berth only)."""
    name = _name(vols, "keep")
    c = dk.client.containers.run(dk.busybox, ["sh", "-c", "echo kept > /data/f"],
                                 volumes={name: {"bind": "/data", "mode": "rw"}}, detach=True)
    assert c.wait(timeout=60)["StatusCode"] == 0
    info = dk.api.inspect_container(c.id)
    mnt = next(m for m in info["Mounts"] if m["Destination"] == "/data")
    assert (mnt["Type"], mnt["Name"], mnt["Driver"], mnt["RW"], mnt["Mode"]) == (
        "volume", name, "local", True, "rw")  # the mode as given (`z` when none is)
    assert mnt["Source"] == dk.api.inspect_volume(name)["Mountpoint"]
    assert name in _volume_names(dk)
    c.remove()
    assert name in _volume_names(dk)  # a named volume stays
    assert _run(dk, "cat /v/f", {name: {"bind": "/v", "mode": "ro"}}) == "kept\n"
    if dk.name == "berth":
        berthd = request.getfixturevalue("berthd")
        berthd.restart()
        dk.pid = berthd.proc.pid  # later fd checks read the new daemon
        assert _run(dk, "cat /v/f", {name: {"bind": "/v", "mode": "rw"}}) == "kept\n"
    dk.api.remove_volume(name)
    assert name not in _volume_names(dk)
    assert not _host_mounts(name)


def test_image_content_copied_into_empty_volume(dk: Daemon, vols: list[str]) -> None:
    """A fresh volume takes the image's content at its path with owners and modes; a volume
    with data in it, or mounted `nocopy`, is left as it is."""
    etc, home, tmp, full, bare = (_name(vols, w) for w in ("etc", "home", "tmp", "full", "bare"))
    _run(dk, "true", {etc: {"bind": "/etc", "mode": "rw"}, home: {"bind": "/home/berth",
                                                                  "mode": "rw"},
                      tmp: {"bind": "/tmp", "mode": "rw"}})
    assert "berth:x:1000:1000" in _run(dk, "cat /v/passwd", {etc: {"bind": "/v", "mode": "ro"}})
    assert _run(dk, "stat -c '%u:%g %a' /a /b", {home: {"bind": "/a", "mode": "ro"},
                                                 tmp: {"bind": "/b", "mode": "ro"}}) \
        == "1000:1000 755\n0:0 1777\n"
    # a volume with anything in it keeps it as it is; nocopy keeps a fresh one empty
    _run(dk, "echo mine > /v/own", {full: {"bind": "/v", "mode": "rw"}})
    _run(dk, "true", {full: {"bind": "/home", "mode": "rw"},
                      bare: {"bind": "/usr", "mode": "nocopy"}})
    listing = _run(dk, "echo $(ls /f) $(ls /b | wc -l)", {full: {"bind": "/f", "mode": "ro"},
                                                          bare: {"bind": "/b", "mode": "ro"}})
    assert listing == "own 0\n"


@pytest.fixture
def volume_image(dk: Daemon) -> Iterator[str]:
    """An image with `VOLUME /data` holding a seeded file, built by the daemon's builder."""
    tag = f"dtv-volimg-{uuid.uuid4().hex[:8]}:1"
    dockerfile = (f"FROM {dk.busybox}\nRUN mkdir /data && echo seeded > /data/seed && "
                  "chown 1000 /data\nVOLUME /data\n")
    dk.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    dk.client.images.remove(tag, force=True)


def test_anonymous_volume_from_image_and_rm_v(dk: Daemon, vols: list[str],
                                              volume_image: str) -> None:
    """An image's VOLUME gets an anonymous volume (64-hex name, in `volume ls`) seeded from the
    image; `rm -v` removes it, plain `rm` keeps it; a named volume over the path replaces it."""
    c = dk.client.containers.create(volume_image, ["sh", "-c", "cat /data/seed"])
    mnt = next(m for m in dk.api.inspect_container(c.id)["Mounts"]
               if m["Destination"] == "/data")
    assert mnt["Type"] == "volume" and HEX64.match(mnt["Name"]) and mnt["Driver"] == "local"
    anon = mnt["Name"]
    assert anon in _volume_names(dk)
    c.start()
    assert c.wait(timeout=60)["StatusCode"] == 0
    assert c.logs(stderr=False) == b"seeded\n"
    c.remove(v=True)
    assert anon not in _volume_names(dk)

    keep = dk.client.containers.create(volume_image, ["true"])
    kept = next(m["Name"] for m in dk.api.inspect_container(keep.id)["Mounts"])
    vols.append(kept)
    keep.remove()
    assert kept in _volume_names(dk)  # without -v the anonymous volume stays

    named = _name(vols, "over")
    over = dk.client.containers.create(volume_image, ["true"],
                                       volumes={named: {"bind": "/data", "mode": "rw"}})
    mounts = dk.api.inspect_container(over.id)["Mounts"]
    assert [(m["Type"], m["Name"]) for m in mounts] == [("volume", named)]
    over.remove(v=True)
    assert named in _volume_names(dk)  # rm -v never takes a named volume
    # `docker create -v /path`: an anonymous volume from Config.Volumes, gone with rm -v
    cid = dk.cli("create", "-v", "/scratch", dk.busybox, "true").stdout.strip()
    scratch = dk.api.inspect_container(cid)["Mounts"][0]
    assert scratch["Destination"] == "/scratch" and HEX64.match(scratch["Name"])
    dk.cli("rm", "-v", cid)
    assert scratch["Name"] not in _volume_names(dk)
    assert not _host_mounts(anon, kept, named, scratch["Name"])


def test_volume_rm_in_use_is_409(dk: Daemon, vols: list[str]) -> None:
    """A volume a container uses (even a stopped one) cannot be removed, force or not."""
    name = _name(vols, "busy")
    c = dk.client.containers.create(dk.busybox, ["true"],
                                    volumes={name: {"bind": "/data", "mode": "rw"}})
    for force in (False, True):
        resp = dk.api.delete(dk.api._url(f"/volumes/{name}"),
                             params={"force": "1"} if force else {})
        assert resp.status_code == 409, resp.text
        assert "in use" in resp.json()["message"]
    c.remove()
    dk.api.remove_volume(name)
    assert name not in _volume_names(dk)


@pytest.mark.parametrize("source", ["a/b", "../x", "..", "x/../../y"])
def test_bad_volume_name_is_400(dk: Daemon, source: str) -> None:
    """A volume name with `/` or `..` is refused with 400 and a message; nothing is created."""
    before_vols, before = _volume_names(dk), dk.container_ids()
    bodies = [
        {"Binds": [f"{source}:/data"]},
        {"Mounts": [{"Type": "volume", "Source": source, "Target": "/data"}]},
    ]
    for hc in bodies:
        resp = dk.api.post(dk.api._url("/containers/create"),
                           json={"Image": dk.busybox, "Cmd": ["true"], "HostConfig": hc})
        assert resp.status_code == 400, (hc, resp.status_code, resp.text)
        assert resp.json()["message"]
    resp = dk.api.post(dk.api._url("/volumes/create"), json={"Name": source})
    assert resp.status_code == 400, resp.text
    assert _volume_names(dk) == before_vols and dk.container_ids() == before
