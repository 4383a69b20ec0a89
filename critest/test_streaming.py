"""Exec, Attach and PortForward through the runtime's streaming server, with our own client
speaking SPDY/3.1 and WebSocket as kubelet/kubectl do."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from critest.harness import Pod
from critest.streamclient import remotecommand as rc
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def sleeper(pod: Pod, images: dict[str, PushedImage]) -> str:
    return pod.run(images["busybox"].ref, ["sh", "-c", "sleep 3600"], name="sleeper")


def exec_url(cri: CriClient, cid: str, cmd: list[str], *, tty: bool = False,
             stdin: bool = False, stdout: bool = True, stderr: bool = True) -> str:
    req = cri.pb.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin, stdout=stdout,
                             stderr=stderr)
    return str(cri.runtime.Exec(req, timeout=10).url)


@pytest.mark.parametrize("transport", ["spdy", "ws"])
def test_exec_no_tty_no_stdin(cri: CriClient, pod: Pod, e2e_images: dict[str, PushedImage],
                              transport: str) -> None:
    cid = sleeper(pod, e2e_images)
    url = exec_url(cri, cid, ["sh", "-c", "echo out; echo err >&2"])
    assert url.startswith("http://127.0.0.1:")
    res = arun(rc.run(url, transport))
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 0), res
