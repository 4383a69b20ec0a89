"""Pod networking: shared localhost, hostPort on 127.0.0.1, the pod IP from the node."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from critest.test_logs import parse_log
from critest.util import container_config, create, exec_sync, pod_status, sandbox
from tests.fixtures._proc import free_port
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)

SERVE = ("mkdir -p /tmp/www && echo served-by-$HOSTNAME > /tmp/www/index.html && "
         "echo serving; exec httpd -f -v -p {port} -h /tmp/www")


def _get(url: str, timeout: float = 20.0) -> str:
    """GET with retries until the server in the container is listening."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback/pod only
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_two_containers_share_localhost_and_host_port(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """One container serves on a hostPort, the other reaches it on 127.0.0.1; both log."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    host_port = free_port()
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=host_port,
                             host_ip="127.0.0.1")
    with sandbox(cri, str(tmp_path / "logs"), hostname="web", port_mappings=[mapping]) as (
            pod_id, cfg):
        server = create(cri, pod_id, cfg, container_config(
            cri, ref, ["sh", "-c", SERVE.format(port=8080)], "server",
            log_path="server/0.log"))
        client_script = ("while ! wget -q -O- http://127.0.0.1:8080/ ; do sleep 0.1; done; "
                         "exec sleep 600")
        client = create(cri, pod_id, cfg, container_config(
            cri, ref, ["sh", "-c", client_script], "client", log_path="client/0.log"))
        assert _get(f"http://127.0.0.1:{host_port}/") == "served-by-web\n"
        ip = pod_status(cri, pod_id).network.ip
        assert _get(f"http://{ip}:8080/") == "served-by-web\n"
        res = exec_sync(cri, client, ["wget", "-q", "-O-", "http://localhost:8080/"])
        assert res.stdout == b"served-by-web\n", res.stderr
        logs = Path(cfg.log_directory)
        deadline = time.monotonic() + 10
        while b"served-by-web" not in b"".join(ln.msg for ln in parse_log(logs / "client/0.log")):
            assert time.monotonic() < deadline, "client log never showed the page"
            time.sleep(0.1)
        assert parse_log(logs / "server/0.log")[0].msg == b"serving"
        assert exec_sync(cri, server, ["true"]).exit_code == 0


def test_host_port_released_with_pod(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """After StopPodSandbox nothing answers on the hostPort, and the port can be reused."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    host_port = free_port()
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=8081, host_port=host_port,
                             host_ip="127.0.0.1")
    for _ in range(2):
        with sandbox(cri, str(tmp_path / "logs"), hostname="again",
                     port_mappings=[mapping]) as (pod_id, cfg):
            create(cri, pod_id, cfg, container_config(
                cri, ref, ["sh", "-c", SERVE.format(port=8081)], "server"))
            assert _get(f"http://127.0.0.1:{host_port}/") == "served-by-again\n"
            cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                                       timeout=60)
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2)  # noqa: S310
