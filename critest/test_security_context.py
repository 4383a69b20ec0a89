"""Security context as upstream critest's security-context spec checks it, seen from inside."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from critest.util import (
    container_config,
    create,
    exec_sync,
    host_ns_inode,
    proc_status_field,
    sandbox,
    sh,
)
from tests.fixtures.cri_client import CriClient
from tests.fixtures.image_defs import GROUPS_ID_CASES
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(180)

# containerd's (and Docker's) default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
# SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
DEFAULT_CAPS = 0x00000000A80425FB
CAP_CHOWN, CAP_NET_ADMIN, CAP_SYS_ADMIN = 0, 12, 21
# "ALL" and privileged mean the node's own bounding set (here: all but CAP_SYS_RESOURCE)
ALL_CAPS = int(proc_status_field(Path("/proc/self/status").read_text(), "CapBnd"), 16)

Runner = Callable[..., str]


@pytest.fixture
def run_in_pod(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> Any:
    """run(security=..., pod_security=..., image=...) -> container id in a fresh pod."""
    ref = e2e_images["busybox"].ref
    pulled.append(ref)
    pods: list[Any] = []

    def run(security: Any = None, pod_security: Any = None, image: str = ref,
            command: tuple[str, ...] = ("sleep", "600")) -> str:
        linux = cri.pb.LinuxPodSandboxConfig(security_context=pod_security)
        ctx = sandbox(cri, str(tmp_path / "logs"), linux=linux)
        pod_id, cfg = ctx.__enter__()
        pods.append(ctx)
        return create(cri, pod_id, cfg, container_config(cri, image, list(command), "sec",
                                                         security=security))

    yield run
    for ctx in reversed(pods):
        ctx.__exit__(None, None, None)


def _status(cri: CriClient, cid: str) -> str:
    return sh(cri, cid, "cat /proc/self/status")


def _caps(cri: CriClient, cid: str) -> tuple[int, int]:
    text = _status(cri, cid)
    return int(proc_status_field(text, "CapEff"), 16), int(proc_status_field(text, "CapBnd"), 16)


def test_run_as_user_group_and_supplemental_groups(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    sec = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=1001),
                                           run_as_group=pb.Int64Value(value=2002),
                                           supplemental_groups=[3003, 4004])
    cid = run_in_pod(security=sec)
    assert sh(cri, cid, "id -u; id -g").split() == ["1001", "2002"]
    assert {3003, 4004} <= {int(g) for g in sh(cri, cid, "id -G").split()}


def test_run_as_username(cri: CriClient, run_in_pod: Runner) -> None:
    cid = run_in_pod(security=cri.pb.LinuxContainerSecurityContext(run_as_username="berth"))
    assert sh(cri, cid, "id -u; id -g").split() == ["1000", "1000"]


def test_readonly_rootfs(cri: CriClient, run_in_pod: Runner) -> None:
    cid = run_in_pod(security=cri.pb.LinuxContainerSecurityContext(readonly_rootfs=True))
    res = exec_sync(cri, cid, ["touch", "/newfile"])
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr
    sh(cri, cid, "touch /dev/shm/ok")  # tmpfs mounts stay writable


def test_default_capabilities(cri: CriClient, run_in_pod: Runner) -> None:
    cid = run_in_pod()
    assert _caps(cri, cid) == (DEFAULT_CAPS, DEFAULT_CAPS)


def test_capabilities_add_and_drop(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    caps = pb.Capability(add_capabilities=["NET_ADMIN", "SYS_ADMIN"],
                         drop_capabilities=["CHOWN"])
    cid = run_in_pod(security=pb.LinuxContainerSecurityContext(capabilities=caps))
    eff, bnd = _caps(cri, cid)
    assert eff == bnd
    assert eff & (1 << CAP_NET_ADMIN) and eff & (1 << CAP_SYS_ADMIN)
    assert not eff & (1 << CAP_CHOWN)
    res = exec_sync(cri, cid, ["chown", "1000", "/tmp"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr


def test_capabilities_drop_all_add_one(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    caps = pb.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_ADMIN"])
    cid = run_in_pod(security=pb.LinuxContainerSecurityContext(capabilities=caps))
    assert _caps(cri, cid) == (1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN)


def test_capabilities_add_all(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    caps = pb.Capability(add_capabilities=["ALL"])
    cid = run_in_pod(security=pb.LinuxContainerSecurityContext(capabilities=caps))
    assert _caps(cri, cid) == (ALL_CAPS, ALL_CAPS)


def test_privileged(cri: CriClient, run_in_pod: Runner) -> None:
    """Every capability, no seccomp, no masked paths, host devices, and mount works."""
    pb = cri.pb
    cid = run_in_pod(security=pb.LinuxContainerSecurityContext(privileged=True),
                     pod_security=pb.LinuxSandboxSecurityContext(privileged=True))
    text = _status(cri, cid)
    assert int(proc_status_field(text, "CapEff"), 16) == ALL_CAPS
    assert proc_status_field(text, "Seccomp") == "0"
    sh(cri, cid, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && umount /tmp/m")
    assert sh(cri, cid, "wc -c < /proc/timer_list").strip() != "0"
    assert sh(cri, cid, "ls /dev | wc -l").strip() != sh(cri, run_in_pod(), "ls /dev | wc -l")


@pytest.mark.parametrize("nnp", [False, True])
def test_no_new_privs(cri: CriClient, run_in_pod: Runner, nnp: bool) -> None:
    cid = run_in_pod(security=cri.pb.LinuxContainerSecurityContext(no_new_privs=nnp))
    assert proc_status_field(_status(cri, cid), "NoNewPrivs") == str(int(nnp))


def test_seccomp_runtime_default_and_unconfined(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    kind = pb.SecurityProfile.ProfileType
    default = pb.LinuxContainerSecurityContext(
        seccomp=pb.SecurityProfile(profile_type=kind.RuntimeDefault))
    assert proc_status_field(_status(cri, run_in_pod(security=default)), "Seccomp") == "2"
    legacy = pb.LinuxContainerSecurityContext(seccomp_profile_path="runtime/default")
    assert proc_status_field(_status(cri, run_in_pod(security=legacy)), "Seccomp") == "2"
    unconfined = pb.LinuxContainerSecurityContext(
        seccomp=pb.SecurityProfile(profile_type=kind.Unconfined))
    assert proc_status_field(_status(cri, run_in_pod(security=unconfined)), "Seccomp") == "0"


def test_seccomp_localhost_blocks_syscall(
    cri: CriClient, run_in_pod: Runner, tmp_path: Path
) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))
    pb = cri.pb
    sec = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=pb.SecurityProfile.ProfileType.Localhost, localhost_ref=str(profile)))
    cid = run_in_pod(security=sec)
    assert proc_status_field(_status(cri, cid), "Seccomp") == "2"
    res = exec_sync(cri, cid, ["mkdir", "/tmp/blocked"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr
    sh(cri, cid, "touch /tmp/allowed")


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 masks nothing when the request lists no masked_paths "
    "(measured: /proc/timer_list readable); kubelet always sends its default list",
    berth="falls back to the OCI default masked paths (/proc/keys, /proc/timer_list, ...)",
)
def test_default_masked_paths(cri: CriClient, run_in_pod: Runner) -> None:
    cid = run_in_pod()
    assert sh(cri, cid, "wc -c < /proc/timer_list").strip() == "0"


@pytest.mark.differs(
    "containerd",
    reason="containerd 1.6 mounts /proc/sys writable when the request lists no readonly_paths "
    "(kubelet always sends its default list)",
    berth="falls back to the OCI default readonly paths (/proc/sys, /proc/sysrq-trigger, ...)",
)
def test_default_readonly_proc_sys(cri: CriClient, run_in_pod: Runner) -> None:
    cid = run_in_pod()
    # rewrite the current value: a node-wide knob, so a runtime that allows it changes nothing
    script = "v=$(cat /proc/sys/vm/overcommit_memory); echo $v > /proc/sys/vm/overcommit_memory"
    res = exec_sync(cri, cid, ["sh", "-c", script])
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr


def test_custom_masked_and_readonly_paths(cri: CriClient, run_in_pod: Runner) -> None:
    pb = cri.pb
    sec = pb.LinuxContainerSecurityContext(masked_paths=["/etc/passwd"],
                                           readonly_paths=["/var/tmp"])
    cid = run_in_pod(security=sec)
    assert sh(cri, cid, "wc -c < /etc/passwd").strip() == "0"
    res = exec_sync(cri, cid, ["touch", "/var/tmp/x"])
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr


@pytest.mark.parametrize("kind", ["pid", "ipc", "net"])
def test_host_namespaces(cri: CriClient, run_in_pod: Runner, kind: str) -> None:
    """NODE mode joins the node's namespace; the default gets a namespace of its own."""
    pb = cri.pb
    field = {"pid": "pid", "ipc": "ipc", "net": "network"}[kind]
    ns = pb.NamespaceOption(**{field: pb.NODE})
    cid = run_in_pod(security=pb.LinuxContainerSecurityContext(namespace_options=ns),
                     pod_security=pb.LinuxSandboxSecurityContext(namespace_options=ns))
    probe = f"stat -L -c %i /proc/self/ns/{kind}"
    assert int(sh(cri, cid, probe)) == host_ns_inode(kind)
    assert int(sh(cri, run_in_pod(), probe)) != host_ns_inode(kind)


def test_pod_shared_pid_namespace(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """pid=POD: containers of the pod see each other's processes; pid=CONTAINER: their own."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    shared = pb.NamespaceOption(pid=pb.POD)
    linux = pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=shared))
    sec = pb.LinuxContainerSecurityContext(namespace_options=shared)
    with sandbox(cri, str(tmp_path), linux=linux) as (pod_id, cfg):
        first = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "4242"], "a",
                                                          security=sec))
        second = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "b",
                                                           security=sec))
        assert "sleep 4242" in sh(cri, second, "ps -o args")
        assert "sleep 600" in sh(cri, first, "ps -o args")
    own = pb.LinuxContainerSecurityContext(namespace_options=pb.NamespaceOption(pid=pb.CONTAINER))
    with sandbox(cri, str(tmp_path), linux=linux) as (pod_id, cfg):
        cid = create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "c",
                                                        security=own))
        assert sh(cri, cid, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == "sleep 600"


def test_run_as_group_without_user_is_refused(
    cri: CriClient, tmp_path: Path, pulled: list[str], e2e_images: dict[str, PushedImage]
) -> None:
    """CRI: run_as_group without run_as_user/run_as_username — the runtime MUST error."""
    pb, ref = cri.pb, e2e_images["busybox"].ref
    pulled.append(ref)
    sec = pb.LinuxContainerSecurityContext(run_as_group=pb.Int64Value(value=2002))
    with sandbox(cri, str(tmp_path)) as (pod_id, cfg):
        with pytest.raises(grpc.RpcError) as err:
            create(cri, pod_id, cfg, container_config(cri, ref, ["sleep", "600"], "g",
                                                      security=sec))
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN)


def test_seccomp_legacy_localhost_path(
    cri: CriClient, run_in_pod: Runner, tmp_path: Path
) -> None:
    """The pre-1.19 string form `localhost/<absolute path>` still selects a node profile."""
    profile = tmp_path / "no-mkdir-legacy.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))
    sec = cri.pb.LinuxContainerSecurityContext(seccomp_profile_path=f"localhost/{profile}")
    cid = run_in_pod(security=sec)
    res = exec_sync(cri, cid, ["mkdir", "/tmp/blocked"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr


@pytest.mark.parametrize("case", range(len(GROUPS_ID_CASES)))
def test_groups_include_primary_gid(cri: CriClient, run_in_pod: Runner,
                                    e2e_images: dict[str, PushedImage], pulled: list[str],
                                    case: int) -> None:
    """runc/crun put additionalGids into setgroups as given; the runtime puts the primary gid
    there with the image's memberships and SupplementalGroups (issue 21's `id` table)."""
    uid, gid, name, extra, want = GROUPS_ID_CASES[case]
    pb = cri.pb
    sec = pb.LinuxContainerSecurityContext(run_as_username=name, supplemental_groups=extra)
    if uid is not None:
        sec.run_as_user.value = uid
    if gid is not None:
        sec.run_as_group.value = gid
    ref = e2e_images["groups"].ref
    pulled.append(ref)
    cid = run_in_pod(security=sec, image=ref)
    assert sh(cri, cid, "id").split("groups=")[-1].strip() == want
