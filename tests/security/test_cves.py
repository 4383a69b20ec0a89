"""One regression test per CVE class that hit containerd, runc or CRI-O, driven through CRI.

Lower-level twins live next to the code they guard: tests/runtime_init (symlink swaps, fd
leaks, /proc/self/exe probe) and tests/images/test_unpack_hostile.py (CVE-2021-32760).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

import grpc
import pytest

from tests.fixtures.berthd import Berthd
from tests.fixtures.cri_client import CriClient, sandbox_config
from tests.fixtures.images import PushedImage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pod(berthd: Berthd, e2e_images: dict[str, PushedImage], tmp_path: Path):
    cli = berthd.client()
    pb = cli.pb
    img = e2e_images["busybox"].ref
    cli.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=img)), timeout=60)
    cfg = sandbox_config(cli, "cve", str(tmp_path / "logs"))
    pod_id = cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)\
        .pod_sandbox_id
    yield cli, pod_id, cfg, img
    cli.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    cli.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)


def create(cli: CriClient, pod_id: str, cfg, img: str, command: list[str], **kw) -> str:
    pb = cli.pb
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=secrets.token_hex(4)),
                              image=pb.ImageSpec(image=img), command=command, **kw)
    return cli.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg), timeout=30).container_id


def start(cli: CriClient, cid: str) -> None:
    cli.runtime.StartContainer(cli.pb.StartContainerRequest(container_id=cid), timeout=30)


def sh(cli: CriClient, cid: str, script: str, timeout: int = 20):
    return cli.runtime.ExecSync(cli.pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script],
                                                       timeout=timeout), timeout=timeout + 10)


def test_cve_2019_5736_proc_self_exe_never_reaches_the_host_binary(pod):
    """A container or exec whose command is /proc/self/exe must not run the runtime's binary,
    and nothing in the container can open an executable of ours for writing."""
    cli, pod_id, cfg, img = pod
    cid = create(cli, pod_id, cfg, img, ["sleep", "600"])
    start(cli, cid)
    try:
        res = cli.runtime.ExecSync(cli.pb.ExecSyncRequest(
            container_id=cid, cmd=["/proc/self/exe", "-c", "import sys; print(sys.version)"],
            timeout=10), timeout=20)
        assert b"Python" not in res.stdout and res.exit_code != 0
    except grpc.RpcError as e:  # refused outright: magic links are not followed at exec
        assert "no such file" in (e.details() or "")
    with pytest.raises(grpc.RpcError):
        start(cli, create(cli, pod_id, cfg, img, ["/proc/self/exe", "-c", "print(1)"]))
    res = sh(cli, cid, "for p in /proc/[0-9]*; do (echo x >> $p/exe) 2>/dev/null && echo W$p; "
                       "done; readlink /proc/1/exe")
    assert b"W/proc" not in res.stdout
    # readlink may also be refused (pid 1 is non-dumpable until it has exec'd): both are safe;
    # what must never show is the runtime's interpreter.
    assert b"python" not in res.stdout.lower()


def test_cve_2024_21626_no_host_fd_or_cwd_leaks_in(pod):
    """Only stdio is open in the container, and a working_dir through /proc/self/fd is refused
    or resolves inside the container, never to a host directory."""
    cli, pod_id, cfg, img = pod
    cid = create(cli, pod_id, cfg, img, ["sleep", "600"])
    start(cli, cid)
    # the pod shares its pid namespace (the proto default), so pid 1 is the pod's catatonit
    # (its own signalfd, beyond the container's reach): look at the container's process
    res = sh(cli, cid, "ls /proc/$(pidof sleep)/fd")
    assert sorted(res.stdout.split()) == [b"0", b"1", b"2"]
    for fd in range(3, 10):
        try:
            bad = create(cli, pod_id, cfg, img, ["sh", "-c", "pwd; ls /"],
                         working_dir=f"/proc/self/fd/{fd}")
        except grpc.RpcError:
            continue
        try:
            start(cli, bad)
        except grpc.RpcError:
            continue  # refused at start: the cwd did not resolve inside the container
        st = cli.runtime.ContainerStatus(cli.pb.ContainerStatusRequest(container_id=bad),
                                         timeout=10).status
        log = Path(st.log_path).read_text() if st.log_path else ""
        assert "/usr/lib/python" not in log and "/sys/fs/cgroup" not in log


def test_cve_2021_30465_symlinked_mount_target_stays_in_the_rootfs(pod, tmp_path: Path):
    """A volume holds a symlink to a host path; a second mount below it must land inside the
    container's rootfs, not on the host path the symlink names."""
    cli, pod_id, cfg, img = pod
    pb = cli.pb
    shared, other = tmp_path / "shared", tmp_path / "other"
    shared.mkdir()
    other.mkdir()
    (other / "marker").write_text("other")
    escape = Path(f"/tmp/berth-escape-{secrets.token_hex(4)}")
    (shared / "x").symlink_to(escape)
    mounts = [pb.Mount(container_path="/vol", host_path=str(shared)),
              pb.Mount(container_path="/vol/x/t", host_path=str(other))]
    try:
        cid = create(cli, pod_id, cfg, img, ["sleep", "600"], mounts=mounts)
        start(cli, cid)
    except grpc.RpcError as e:  # refusing the mount is also safe
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN,
                            grpc.StatusCode.INTERNAL)
    assert not escape.exists(), f"mount followed a symlink out to {escape}"
    assert str(escape) not in Path("/proc/self/mountinfo").read_text()


def test_cve_2025_31133_masked_paths_are_the_real_dev_null(pod):
    """Masking binds the host's /dev/null (1:3); a swapped /dev/null in the container cannot
    turn a mask into a writable bind of something else."""
    cli, pod_id, cfg, img = pod
    cid = create(cli, pod_id, cfg, img, ["sleep", "600"])
    start(cli, cid)
    res = sh(cli, cid, "stat -c '%t:%T' /proc/timer_list; cat /proc/timer_list | wc -c; "
                       "ls /proc/acpi | wc -l; touch /proc/acpi/x 2>/dev/null || echo RO")
    assert res.stdout.decode().split() == ["1:3", "0", "0", "RO"], res.stdout


def test_cve_2022_31030_exec_sync_output_is_capped(pod, berthd: Berthd):
    """40 MB of output comes back truncated to the cap, and the daemon stays small."""
    cli, pod_id, cfg, img = pod
    cid = create(cli, pod_id, cfg, img, ["sleep", "600"])
    start(cli, cid)
    res = cli.runtime.ExecSync(cli.pb.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "head -c 40000000 /dev/zero; head -c 40000000 "
                                           "/dev/zero >&2"], timeout=60), timeout=90)
    assert 1 << 20 < len(res.stdout) <= 8 << 20 and 1 << 20 < len(res.stderr) <= 8 << 20
    assert berthd.proc is not None
    found = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{berthd.proc.pid}/status").read_text())
    assert found is not None
    rss = int(found.group(1))
    assert rss < 400_000, f"berthd RSS {rss} kB after a capped exec"


def test_cve_2022_1708_exec_sync_timeout_kills_chatty_children(pod):
    """A process that floods output and never exits is stopped at its timeout."""
    cli, pod_id, cfg, img = pod
    cid = create(cli, pod_id, cfg, img, ["sleep", "600"])
    start(cli, cid)
    with pytest.raises(grpc.RpcError) as info:
        cli.runtime.ExecSync(cli.pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "yes & yes >&2 & sleep 600"], timeout=2),
            timeout=30)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Killed children reparent to the container's pid 1 (sleep), which never reaps them, so
    # zombies may stay, as under containerd; what matters is that none still runs.
    res = sh(cli, cid, "ps -o stat,comm | grep yes | grep -vc '^Z' || true")
    assert res.stdout.strip() == b"0"


def test_cve_2022_0811_sysctl_values_cannot_inject(berthd: Berthd, tmp_path: Path):
    cli = berthd.client()
    pb = cli.pb
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    for key, value in [("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/tmp/pwn"),
                       ("kernel.shm_rmid_forced", "1\nkernel.core_pattern=|/tmp/pwn"),
                       ("kernel.core_pattern", "|/tmp/pwn"),
                       ("net.ipv4/../../kernel/core_pattern", "x")]:
        cfg = sandbox_config(cli, "sysctl", str(tmp_path / "logs"))
        cfg.linux.sysctls[key] = value
        with pytest.raises(grpc.RpcError) as info:
            cli.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, value)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items == [] or \
        all(p.metadata.name != "sysctl" for p in
            cli.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)


def test_cve_2020_15257_sockets_are_paths_with_tight_modes(berthd: Berthd):
    """No abstract unix socket of ours (host-network containers could reach it), and the
    monitor's socket is root-only."""
    abstract = [line for line in Path("/proc/net/unix").read_text().splitlines()
                if "@" in line and ("berth" in line or "monitor" in line)]
    assert abstract == []
    mon = berthd.run_dir / "monitor.sock"
    assert stat.S_ISSOCK(os.stat(mon).st_mode) and os.stat(mon).st_mode & 0o777 == 0o600
    assert os.stat(berthd.socket).st_mode & 0o007 == 0
