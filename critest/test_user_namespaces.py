"""User namespaces (hostUsers: false): root inside maps to an unprivileged host range.

The image and the volumes are mounted idmapped, so their files keep their owners inside, and
what the container writes to a volume lands with the host ids the mapping gives back.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.util import container_config, create, sandbox, sh
from tests.fixtures.cri_client import CriClient
from tests.fixtures.images import PushedImage

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.differs(
        "containerd",
        reason="containerd 1.6 predates CRI userns_options (1.7 experimental, 2.0): it ignores "
        "the field and runs the container as host root",
        berth="runs the container in a user namespace with idmapped rootfs and volumes",
    ),
]
SIZE = 65536


def _userns(pb: Any, host: int, size: int = SIZE) -> Any:
    ids = [pb.IDMapping(container_id=0, host_id=host, length=size)]
    return pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER, userns_options=pb.UserNamespace(
        mode=pb.NamespaceMode.POD, uids=ids, gids=ids))


def _host_pid(marker: str) -> int:
    """The host pid of the container process whose command line contains marker."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmd:
                return int(entry)
    raise AssertionError(f"no process runs {marker}")


def test_user_namespaced_pod(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage],
) -> None:
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    host = SIZE * random.randrange(40, 200)
    ns = _userns(pb, host)
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "root-file").write_text("r")
    (vol / "user-file").write_text("u")
    os.chown(vol / "user-file", 1000, 1000)
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=ns))
    sleep = f"sleep {random.randrange(100000, 999999)}"
    with sandbox(cri, str(tmp_path / "logs"), name="userns", linux=linux) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(
            cri, ref, sleep.split(), "u",
            security=pb.LinuxContainerSecurityContext(namespace_options=ns),
            mounts=[pb.Mount(container_path="/vol", host_path=str(vol))]))
        assert sh(cri, cid, "cat /proc/self/uid_map").split() == ["0", str(host), str(SIZE)]
        assert sh(cri, cid, "cat /proc/self/gid_map").split() == ["0", str(host), str(SIZE)]
        assert sh(cri, cid, "id -u").strip() == "0"
        # the image's files keep their owners, and root may write where image root owns
        assert sh(cri, cid, "stat -c %u:%g /bin /etc/passwd").split() == ["0:0", "0:0"]
        sh(cri, cid, "touch /made-by-root && mkdir /etc/made-dir")
        # the volume is idmapped both ways
        assert sh(cri, cid, "stat -c %u /vol/root-file /vol/user-file").split() == ["0", "1000"]
        sh(cri, cid, "echo x > /vol/from-ctr")
        assert os.stat(vol / "from-ctr").st_uid == 0
        # a host-root file that is not idmapped is out of reach of root inside
        out = sh(cri, cid, "echo x >> /etc/hosts 2>&1 && echo written || echo refused")
        assert out.strip().endswith("refused"), out
        # seen from the host, the process is the unprivileged start of the range
        status = Path(f"/proc/{_host_pid(sleep)}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(host)] * 4


@pytest.mark.parametrize("host, size", [(0, SIZE), (SIZE, 0)])
def test_mapping_onto_host_root_is_refused(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage],
    host: int, size: int,
) -> None:
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    with sandbox(cri, str(tmp_path / "logs"), name="userns-bad") as (pod_id, cfg):
        with pytest.raises(grpc.RpcError) as err:
            create(cri, pod_id, cfg, container_config(
                cri, ref, ["sleep", "600"], "bad",
                security=pb.LinuxContainerSecurityContext(namespace_options=_userns(
                    pb, host, size))))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
