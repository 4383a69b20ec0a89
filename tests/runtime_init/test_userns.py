"""A container in its own user namespace: root inside is an unprivileged host uid."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from runtime.spec import default_spec
from tests.runtime_init.conftest import build_busybox_rootfs

pytestmark = pytest.mark.timeout(60)
HOST_ID = 200000


@pytest.fixture
def userns_rootfs():
    """A rootfs owned by the mapped ids, under a dir the unprivileged host uid can traverse."""
    top = Path(tempfile.mkdtemp(prefix="berth-userns-"))
    os.chmod(top, 0o755)
    root = top / "rootfs"
    build_busybox_rootfs(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, HOST_ID, HOST_ID)
    yield root
    shutil.rmtree(top)


def _userns_spec(root: Path, script: str) -> dict:
    spec = default_spec(str(root), ["sh", "-c", script], hostname="uns")
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
    return spec


def test_userns_container(userns_rootfs, run_container):
    script = "cat /proc/self/uid_map; id -u; echo $$; hostname; touch /tmp/made; " \
             "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"
    spec = _userns_spec(userns_rootfs, script)
    spec["process"]["oomScoreAdj"] = 100
    r = run_container({"spec": spec, "rootfs": str(userns_rootfs)})
    assert r.exit == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["0", str(HOST_ID), "65536"]
    assert lines[1:4] == ["0", "1", "uns"]
    st = os.stat(userns_rootfs / "tmp/made")
    assert (st.st_uid, st.st_gid) == (HOST_ID, HOST_ID)


def test_exec_into_userns_container(userns_rootfs, run_container):
    spec = _userns_spec(userns_rootfs, "exec sleep 30")
    proc = dict(spec["process"], args=["sh", "-c", "id -u; cat /proc/self/uid_map; hostname"],
                user={"uid": 1000, "gid": 1000})
    r = run_container({"spec": spec, "rootfs": str(userns_rootfs), "exec": [proc], "kill": True})
    assert r.data["exec"] == [0], r
    lines = r.stdout.splitlines()
    assert lines[0] == "1000"
    assert lines[1].split() == ["0", str(HOST_ID), "65536"]
    assert lines[2] == "uns"


@pytest.fixture
def pinned_net_uts(tmp_path):
    """A net and a uts namespace pinned on files, as a pod's are (owned by the host's userns)."""
    pins = {k: tmp_path / k for k in ("net", "uts")}
    for p in pins.values():
        p.touch()
    subprocess.run(["unshare", f"--net={pins['net']}", f"--uts={pins['uts']}", "hostname",
                    "podhost"], check=True)
    yield pins
    for p in pins.values():
        subprocess.run(["umount", str(p)], check=False)


def test_userns_container_joins_host_owned_pod_namespaces(userns_rootfs, run_container,
                                                          pinned_net_uts):
    """The pod's net/uts are joined before the user ns exists; the container holds no caps there."""
    spec = _userns_spec(userns_rootfs, "hostname; stat -L -c %i /proc/self/ns/net; "
                                       "hostname other 2>&1 || echo refused")
    spec["hostname"] = ""
    spec["linux"]["namespaces"] = [
        n for n in spec["linux"]["namespaces"] if n["type"] not in ("network", "uts")
    ] + [{"type": "network", "path": str(pinned_net_uts["net"])},
         {"type": "uts", "path": str(pinned_net_uts["uts"])}]
    r = run_container({"spec": spec, "rootfs": str(userns_rootfs)})
    assert r.exit == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "podhost"
    assert int(lines[1]) == os.stat(pinned_net_uts["net"]).st_ino
    assert lines[-1] == "refused"
