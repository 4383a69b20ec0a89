"""The `berth` command's own parsing and drawing, without a daemon (dockertest/ runs it live)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from berthcli.commands.pull import split_ref
from berthcli.commands.run import port_bindings, restart_policy
from berthcli.main import parser
from berthcli.progress import PullError, PullView, bar


@pytest.mark.parametrize("ref,want", [
    ("127.0.0.1:5000/e2e/busybox:1.0", ("127.0.0.1:5000/e2e/busybox", "1.0")),
    ("127.0.0.1:5000/e2e/busybox", ("127.0.0.1:5000/e2e/busybox", "latest")),
    ("busybox", ("busybox", "latest")),
    ("r:5000/x@sha256:abc", ("r:5000/x", "sha256:abc")),
])  # fmt: skip
def test_split_ref_keeps_the_port(ref: str, want: tuple[str, str]) -> None:
    assert split_ref(ref) == want


def test_publish_specs() -> None:
    assert port_bindings(["127.0.0.1:8081:8080", "9000:90/udp", "70", "127.0.0.1::22"]) == {
        "8080/tcp": ("127.0.0.1", 8081), "90/udp": 9000, "70/tcp": None, "22/tcp": ("127.0.0.1",),
    }  # fmt: skip


def test_restart_policy() -> None:
    assert restart_policy("on-failure:2") == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert restart_policy("no") == {"Name": "", "MaximumRetryCount": 0}


def test_run_takes_the_command_after_the_image() -> None:
    args = parser().parse_args(["-H", "unix:///x", "run", "--rm", "img", "sh", "-c", "ls -l"])
    assert args.host == "unix:///x" and args.image == "img"
    assert args.command == ["sh", "-c", "ls -l"]


def test_pull_view_plain_and_tty() -> None:
    events: list[dict[str, Any]] = [{"status": "Pulling from e2e/big", "id": "1.0"},
              {"status": "Downloading", "id": "aa", "progressDetail": {"current": 5, "total": 10}},
              {"status": "Downloading", "id": "aa", "progressDetail": {"current": 9, "total": 10}},
              {"status": "Pull complete", "id": "aa"}]  # fmt: skip
    plain = io.StringIO()
    view = PullView(out=plain)
    for e in events:
        view.feed(e)
    assert plain.getvalue().splitlines() == ["1.0: Pulling from e2e/big", "aa: Downloading",
                                             "aa: Pull complete"]  # fmt: skip
    drawn = io.StringIO()
    view = PullView(out=drawn, tty=True)
    for e in events:
        view.feed(e)
    assert "\x1b[1A" in drawn.getvalue() and bar(9, 10) in drawn.getvalue()
    with pytest.raises(PullError, match="denied"):
        view.feed({"error": "denied"})
