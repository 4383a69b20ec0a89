"""System endpoints: _ping, version, info, events, system/df."""

from __future__ import annotations

import time

from dockertest.harness import Daemon


def test_ping_get_and_head(dk: Daemon) -> None:
    """GET answers OK; HEAD answers 200 with no body (the CLI uses HEAD to negotiate)."""
    assert dk.api.ping() is True
    res = dk.api._result(dk.api.get(dk.api._url("/_ping")))
    assert res == "OK"
    head = dk.api.head(dk.api._url("/_ping"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers.get("Api-Version")


def test_version_prefixed_and_bare_paths(dk: Daemon) -> None:
    """API 1.41 or later, served under /v1.41/... and bare paths alike."""
    v = dk.api.version()
    major, minor = (int(x) for x in v["ApiVersion"].split("."))
    assert (major, minor) >= (1, 41)
    bare = dk.api.get(dk.api.base_url + "/version").json()
    assert bare["ApiVersion"] == v["ApiVersion"]
    assert v["Os"] == "linux" and v["Arch"] == "amd64"


def test_info(dk: Daemon) -> None:
    info = dk.client.info()
    for key in ("Containers", "ContainersRunning", "Images", "CgroupVersion", "Name"):
        assert key in info, key
    assert info["CgroupVersion"] == "1"


def test_events_since_until_filters(dk: Daemon) -> None:
    """A finished window (since/until) streams the run's events, filtered to one container."""
    since = int(time.time()) - 1
    c = dk.client.containers.run(dk.busybox, ["true"], detach=True, name="dt-events")
    c.wait(timeout=60)
    c.remove()
    until = int(time.time()) + 1
    events = list(dk.client.events(since=since, until=until, decode=True,
                                   filters={"container": "dt-events", "type": "container"}))
    actions = [e["Action"] for e in events]
    for a in ("create", "start", "die", "destroy"):
        assert a in actions, actions
    assert all(e["Actor"]["Attributes"]["name"] == "dt-events" for e in events)
    assert actions.index("create") < actions.index("start") < actions.index("die")


def test_events_stream_live(dk: Daemon) -> None:
    """A stream opened before the run delivers its events as they happen."""
    stream = dk.client.events(decode=True, filters={"event": "start", "container": "dt-live"})
    try:
        c = dk.client.containers.run(dk.busybox, ["true"], detach=True, name="dt-live")
        ev = next(iter(stream))
        assert ev["Action"] == "start" and ev["id"] == c.id
    finally:
        stream.close()


def test_system_df(dk: Daemon) -> None:
    df = dk.api.df()
    assert {"LayersSize", "Images", "Containers", "Volumes"} <= set(df)
    tags = [t for img in df["Images"] for t in (img.get("RepoTags") or [])]
    assert dk.busybox in tags
