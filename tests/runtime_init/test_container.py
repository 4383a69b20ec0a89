"""Real containers from runtime.init, effects checked from inside the container."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from runtime import caps, seccomp
from runtime.spec import default_spec

pytestmark = pytest.mark.timeout(60)


def sh(rootfs: Path, script: str, **kw) -> dict:
    return default_spec(str(rootfs), ["sh", "-c", script], **kw)


def go(run_container, rootfs: Path, spec: dict, **req):
    return run_container({"spec": spec, "rootfs": str(rootfs), **req})


def test_pid1_hostname_and_clean_exit(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "echo $$; hostname; exit 3", hostname="box-a1")
    r = go(run_container, busybox_rootfs, spec)
    assert r.stdout.split() == ["1", "box-a1"]
    assert r.exit == 3


def test_joins_netns_by_path(busybox_rootfs, run_container):
    name = f"berth-init-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        spec = sh(busybox_rootfs, "readlink /proc/self/ns/net")
        for ns in spec["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = path
        r = go(run_container, busybox_rootfs, spec)
        assert r.stdout.strip() == f"net:[{os.stat(path).st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _status(stdout: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in stdout.splitlines() if ":\t" in line)


def test_default_caps_nnp_seccomp(busybox_rootfs, run_container):
    spec = default_spec(str(busybox_rootfs), ["cat", "/proc/self/status"])
    spec["linux"]["seccomp"] = seccomp.default_profile()
    r = go(run_container, busybox_rootfs, spec)
    st = _status(r.stdout)
    want = f"{caps.mask(caps.default_caps()):016x}"
    assert st["CapEff"] == want and st["CapBnd"] == want and st["CapPrm"] == want
    assert st["CapAmb"] == "0" * 16
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert st["SigIgn"] == st["SigBlk"] == "0" * 16  # Python ignores SIGPIPE; containers must not


def test_seccomp_without_nnp_is_loaded_before_caps_drop(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status")
    spec["process"]["noNewPrivileges"] = False
    spec["linux"]["seccomp"] = seccomp.default_profile()
    r = go(run_container, busybox_rootfs, spec)
    st = _status(r.stdout)
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("0", "2")


def test_non_root_user_groups_and_ambient(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "id; grep Cap /proc/self/status")
    keep = ["CAP_NET_BIND_SERVICE"]
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}
    spec["process"]["capabilities"] = {k: keep for k in
                                       ("bounding", "effective", "permitted", "inheritable",
                                        "ambient")}
    r = go(run_container, busybox_rootfs, spec)
    first = r.stdout.splitlines()[0]
    assert first.startswith("uid=1000(alice) gid=1000(alice) groups=")
    assert "10(wheel)" in first and "29(audio)" in first
    st = _status(r.stdout)
    want = f"{caps.mask(keep):016x}"
    assert st["CapEff"] == want and st["CapAmb"] == want and st["CapBnd"] == want


def test_home_from_the_containers_passwd(busybox_rootfs, run_container):
    """runc's rule: without HOME in the env, the user's home from the container's /etc/passwd
    ("/" for a uid it does not list); a HOME given is kept."""
    got = []
    for uid, env in ((1000, []), (4242, []), (1000, ["HOME=/given"])):
        spec = sh(busybox_rootfs, "echo $HOME")
        spec["process"]["user"] = {"uid": uid, "gid": uid, "additionalGids": []}
        spec["process"]["env"] += env
        got.append(go(run_container, busybox_rootfs, spec).stdout.strip())
    assert got == ["/home/alice", "/", "/given"]


def test_readonly_rootfs(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "touch /newfile 2>&1; echo rc=$?; touch /dev/shm/ok && echo shm-ok",
              readonly=True)
    r = go(run_container, busybox_rootfs, spec)
    assert "Read-only file system" in r.stdout and "rc=1" in r.stdout
    assert "shm-ok" in r.stdout
    assert not (busybox_rootfs / "newfile").exists()


def test_masked_and_readonly_paths(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "echo [$(cat /etc/hostname)]; ls -A /home | wc -l; "
                              "touch /var/x 2>&1; (echo 1 > /proc/sys/kernel/printk) 2>&1; "
                              "wc -c < /proc/timer_list")
    spec["linux"]["maskedPaths"] += ["/etc/hostname", "/home"]
    spec["linux"]["readonlyPaths"] += ["/var"]
    r = go(run_container, busybox_rootfs, spec)
    lines = r.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].strip() == "0"
    assert "Read-only file system" in lines[2]
    assert "Read-only file system" in lines[3]
    assert lines[4].strip() == "0"


def test_mask_uses_host_dev_null_not_a_swapped_symlink(tmp_path, run_container):
    """CVE-2025-31133: the rootfs's /dev/null is a symlink; the mask must still be a 1:3 node."""
    from tests.runtime_init.conftest import build_busybox_rootfs

    root = tmp_path / "rootfs"
    build_busybox_rootfs(root)
    os.symlink("/etc/passwd", root / "dev/null")
    spec = sh(root, "wc -c < /etc/hostname; stat -c %t:%T /etc/hostname")
    spec["mounts"] = [m for m in spec["mounts"] if not m["destination"].startswith("/dev")]
    spec["linux"]["maskedPaths"] = ["/etc/hostname"]
    r = go(run_container, root, spec)
    assert r.stdout.split() == ["0", "1:3"]


def test_dev_setup(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "readlink /dev/ptmx; ls /dev/pts/ptmx; head -c 4 /dev/zero | wc -c; "
                              "grep -E ' /dev/(shm|pts) ' /proc/mounts")
    r = go(run_container, busybox_rootfs, spec)
    out = r.stdout.splitlines()
    assert out[:3] == ["pts/ptmx", "/dev/pts/ptmx", "4"]
    assert any("ptmxmode=666" in x for x in out)
    assert any(x.startswith("shm /dev/shm tmpfs") and "size=65536k" in x for x in out)


def test_bind_mounts_ro_and_rw(busybox_rootfs, run_container, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello").write_text("hi\n")
    spec = sh(busybox_rootfs, "cat /data/ro/hello; touch /data/ro/x 2>&1; echo out > /data/rw/f; "
                              "grep ' /data/ro ' /proc/mounts")
    spec["mounts"] += [
        {"destination": "/data/ro", "type": "bind", "source": str(ro),
         "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/data/rw", "type": "bind", "source": str(rw),
         "options": ["rbind", "rslave"]},
    ]
    r = go(run_container, busybox_rootfs, spec)
    lines = r.stdout.splitlines()
    assert lines[0] == "hi"
    assert "Read-only file system" in lines[1]
    assert " ro," in lines[2]
    assert (rw / "f").read_text() == "out\n"
    assert not (ro / "x").exists()


def test_symlinked_mount_targets_stay_inside_rootfs(tmp_path, run_container):
    """CVE-2021-30465 class: targets that are symlinks climbing out land inside the rootfs."""
    from tests.runtime_init.conftest import build_busybox_rootfs

    root = tmp_path / "rootfs"
    build_busybox_rootfs(root)
    escape = f"/tmp/berth-escape-{secrets.token_hex(4)}"
    host_abs = tmp_path / "host-abs"
    host_abs.mkdir()
    os.symlink("/etc/../../../../.." + escape, root / "mnt/target")
    os.symlink(str(host_abs), root / "mnt/abs")
    src = tmp_path / "vol"
    src.mkdir()
    (src / "marker").write_text("vol\n")
    os.symlink("../run/resolve/stub.conf", root / "etc/resolv.conf")  # dangling, as in Ubuntu
    spec = sh(root, "cat /mnt/target/marker; cat /mnt/abs/marker; cat /etc/resolv.conf")
    spec["mounts"] += [
        {"destination": "/mnt/target", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/mnt/abs", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(src / "marker"),
         "options": ["rbind", "ro"]},
    ]
    r = go(run_container, root, spec)
    assert r.stdout.split() == ["vol", "vol", "vol"]
    assert (root / "run/resolve/stub.conf").is_file()
    assert not os.path.lexists(escape)
    assert (root / escape.lstrip("/")).is_dir()
    assert list(host_abs.iterdir()) == []
    assert (root / str(host_abs).lstrip("/")).is_dir()


def test_no_leaked_fds_and_cwd(busybox_rootfs, run_container):
    """CVE-2024-21626: the driver holds an inheritable host dir fd; the container sees only 0-2."""
    spec = sh(busybox_rootfs, "ls /proc/$$/fd; readlink /proc/$$/cwd")
    spec["process"]["cwd"] = "/tmp"
    r = go(run_container, busybox_rootfs, spec, leak_fd=True)
    assert r.stdout.split() == ["0", "1", "2", "/tmp"]
    for n in range(3, 12):  # no fd of ours can serve as a working directory
        spec["process"]["cwd"] = f"/proc/self/fd/{n}"
        r = go(run_container, busybox_rootfs, spec, leak_fd=True)
        assert r.error and r.error.startswith(f"chdir /proc/self/fd/{n}: "), r


def test_hostname_needs_private_uts(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "true", namespaces=("pid", "mount"))
    r = go(run_container, busybox_rootfs, spec)
    assert r.error == "a hostname needs a private UTS namespace"


def test_rlimits_and_oom_score_adj(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "ulimit -n; cat /proc/self/oom_score_adj")
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}]
    spec["process"]["oomScoreAdj"] = 500
    r = go(run_container, busybox_rootfs, spec)
    assert r.stdout.split() == ["512", "500"]
    spec["process"]["oomScoreAdj"] = -998  # clamped: we lack CAP_SYS_RESOURCE
    r = go(run_container, busybox_rootfs, spec)
    assert int(r.stdout.split()[1]) >= int(Path("/proc/self/oom_score_adj").read_text())


def test_missing_binary_errors(busybox_rootfs, run_container):
    r = go(run_container, busybox_rootfs, default_spec(str(busybox_rootfs), ["/bin/nope"]))
    assert r.data == {"error": "exec: /bin/nope: no such file or directory", "stage": "start"}
    r = go(run_container, busybox_rootfs, default_spec(str(busybox_rootfs), ["nope"]))
    assert r.error == 'exec: "nope": executable file not found in $PATH'


def test_mount_error_is_reported(busybox_rootfs, run_container, tmp_path):
    spec = sh(busybox_rootfs, "true")
    spec["mounts"].append({"destination": "/x", "type": "bind", "source": str(tmp_path / "none"),
                           "options": ["rbind"]})
    r = go(run_container, busybox_rootfs, spec)
    assert r.data["stage"] == "create"
    assert r.error.startswith("mount /x: source ") and "No such file" in r.error


def test_exec_into_running_container(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "exec sleep 30", hostname="exec-box")
    spec["linux"]["seccomp"] = seccomp.default_profile()
    spec["process"]["oomScoreAdj"] = 321
    script = "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/$$/fd; " \
             "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; id -u; " \
             "cat /proc/self/oom_score_adj"
    proc = dict(spec["process"], args=["sh", "-c", script],
                user={"uid": 1001, "gid": 1001})
    missing = dict(spec["process"], args=["/no/such"])
    r = go(run_container, busybox_rootfs, spec, exec=[proc, missing], kill=True)
    assert r.data["exec"][0] == 0
    assert r.data["exec"][1] == "exec: /no/such: no such file or directory"
    lines = r.stdout.splitlines()
    assert lines[:2] == ["exec-box", "sleep 30 "]
    assert lines[2:5] == ["0", "1", "2"]
    assert _status("\n".join(lines[5:7])) == {"Seccomp": "2", "NoNewPrivs": "1"}
    assert lines[7:9] == ["1001", "321"]


def test_host_interpreter_unreachable_before_exec(busybox_rootfs, run_container):
    """CVE-2019-5736: while pid 1 still runs our Python (created, not started), a process in the
    container can neither resolve nor open its /proc/1/exe; its own exe is the container's."""
    spec = sh(busybox_rootfs, "true")
    probe = "readlink /proc/1/exe || echo noreadlink; (echo x >> /proc/1/exe) 2>&1; " \
            "head -c1 /proc/1/exe >/dev/null 2>&1 || echo noread; " \
            "readlink /proc/1/fd/3 || echo nofd; readlink /proc/self/exe"
    proc = dict(spec["process"], args=["sh", "-c", probe])
    r = go(run_container, busybox_rootfs, spec, start=False, exec=[proc], kill=True)
    lines = r.stdout.splitlines()
    assert "python" not in r.stdout
    assert lines[0] == "noreadlink"
    assert "Permission denied" in lines[1]
    assert lines[2:] == ["noread", "nofd", "/bin/sh"]


def test_overlay_rootfs(busybox_rootfs, run_container, tmp_path):
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    spec = sh(merged, "echo new > /newfile; cat /etc/hostname")
    ov = {"lowerdirs": [str(busybox_rootfs)], "upperdir": str(upper), "workdir": str(work)}
    r = go(run_container, merged, spec, overlay=ov)
    assert r.stdout.strip() == "busybox"
    assert (upper / "newfile").read_text() == "new\n"
    assert not (busybox_rootfs / "newfile").exists()
    assert list(merged.iterdir()) == []  # the overlay lived only in the container's mount ns


def test_sysctls_apply_in_container_namespaces(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start "
                              "/proc/sys/kernel/shmmni")
    spec["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "80",
                               "kernel.shmmni": "1234"}
    r = go(run_container, busybox_rootfs, spec)
    assert r.stdout.split() == ["80", "1234"]
    assert Path("/proc/sys/kernel/shmmni").read_text().strip() != "1234"


def test_no_mounts_left_on_host(busybox_rootfs, run_container):
    go(run_container, busybox_rootfs, sh(busybox_rootfs, "true"))
    assert str(busybox_rootfs) not in Path("/proc/self/mountinfo").read_text()


def _own_cgroup_lines(stdout: str) -> list[str]:
    """The /proc/self/cgroup line of the hierarchy the driver manages: pids on v1, 0:: on v2."""
    from runtime import cgroups

    key = "0::" if cgroups.detect() == "v2" else ":pids:"
    return [ln for ln in stdout.splitlines() if key in ln]


def test_joins_cgroup(busybox_rootfs, run_container):
    from runtime import cgroups

    path = f"berth-init-test-{secrets.token_hex(4)}"
    drv = cgroups.driver()
    drv.create(path, cgroups.Resources(pids_limit=50))
    try:
        spec = sh(busybox_rootfs, "cat /proc/self/cgroup")
        r = go(run_container, busybox_rootfs, spec, cgroup_path=path)
        lines = _own_cgroup_lines(r.stdout)
        assert lines and lines[0].endswith("/" + path), r.stdout
        spec["linux"]["namespaces"].append({"type": "cgroup"})  # joined first, then unshared
        r = go(run_container, busybox_rootfs, spec, cgroup_path=path)
        lines = _own_cgroup_lines(r.stdout)
        assert lines and lines[0].endswith(":/"), r.stdout
        assert drv.pids(path) == []
    finally:
        drv.remove(path)


def test_terminal_and_console(busybox_rootfs, run_container):
    spec = sh(busybox_rootfs, "tty; stat -c %t:%T /dev/console; test -t 0 && echo isatty")
    spec["process"]["terminal"] = True
    r = go(run_container, busybox_rootfs, spec, tty=True)
    out = r.data["tty"].replace("\r", "").splitlines()
    assert out[0].startswith("/dev/")
    assert out[1].startswith("88:")  # the pty slave (unix98 pty major 136 = 0x88)
    assert out[2] == "isatty"


CGROUP_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}


def test_cgroup_mount_is_read_only_everywhere(busybox_rootfs, run_container):
    """v1: a read-only tmpfs of read-only hierarchies; v2: one read-only cgroup2 mount."""
    from runtime import cgroups

    v2 = cgroups.detect() == "v2"
    inner = "/sys/fs/cgroup/berth-x" if v2 else "/sys/fs/cgroup/memory/berth-x"
    spec = sh(busybox_rootfs, "ls /sys/fs/cgroup | tr '\\n' ' '; echo; "
                              f"mkdir {inner} 2>&1; mkdir /sys/fs/cgroup/y 2>&1; "
                              "awk '$5 ~ \"^/sys/fs/cgroup\" { for (i = 7; $i != \"-\"; i++) ; "
                              "print $6, $(i + 1) }' /proc/self/mountinfo")
    spec["mounts"].append(dict(CGROUP_MOUNT))
    r = go(run_container, busybox_rootfs, spec)
    lines = r.stdout.splitlines()
    present = set(lines[0].split())
    if v2:
        want = {"cgroup.procs", "cgroup.controllers", "memory.stat"}  # the root has no *.max
    else:
        want = {p.name for p in Path("/sys/fs/cgroup").iterdir() if p.name in ("memory", "pids")}
    assert want <= present, r.stdout
    assert all("Read-only file system" in ln for ln in lines[1:3]), r.stdout
    mounts = [ln.split() for ln in lines[3:]]
    assert mounts and all(opts.split(",")[0] == "ro" for opts, _ in mounts), r.stdout
    if v2:
        assert [fstype for _, fstype in mounts] == ["cgroup2"], r.stdout
    assert not Path(inner).exists()


@pytest.mark.skipif("__import__('runtime.cgroups').cgroups.detect() != 'v2'",
                    reason="cgroup namespaces root a cgroup2 mount only; v1 mounts show all")
def test_cgroup_namespace_shows_the_container_its_own_cgroup_as_root(busybox_rootfs,
                                                                     run_container):
    """With a cgroupns the container's /sys/fs/cgroup is its own cgroup: its limits at the top."""
    from runtime import cgroups

    path = f"berth-init-test-{secrets.token_hex(4)}"
    drv = cgroups.driver()
    drv.create(path, cgroups.Resources(pids_limit=42))
    try:
        spec = sh(busybox_rootfs, "cat /proc/self/cgroup /sys/fs/cgroup/pids.max; "
                                  "(echo 1 > /sys/fs/cgroup/cgroup.freeze) 2>&1; echo rc=$?")
        spec["linux"]["namespaces"].append({"type": "cgroup"})
        spec["mounts"].append(dict(CGROUP_MOUNT))
        r = go(run_container, busybox_rootfs, spec, cgroup_path=path)
        lines = r.stdout.splitlines()
        assert lines[:2] == ["0::/", "42"], r.stdout
        assert "Read-only file system" in lines[2] and lines[3] != "rc=0", r.stdout
        assert r.exit == 0 and drv.pids(path) == []
    finally:
        drv.remove(path)


def test_second_container_joins_pid_net_ipc_uts_of_first(busybox_rootfs, run_container):
    """A pod: the app container shares the sandbox's namespaces through /proc/<pid>/ns paths."""
    first = sh(busybox_rootfs, "exec sleep 30", hostname="pod-ns")
    # Under load the first container may still be its shell for a moment: wait for the exec.
    second = sh(busybox_rootfs, "for i in $(seq 100); do ps -o comm | grep -q sleep && break; "
                                "sleep 0.05; done; "
                                "echo $$; hostname; ps -o comm | grep -c sleep; "
                                "(readlink /proc/1/ns/net; readlink /proc/self/ns/net) | "
                                "uniq | wc -l")
    second.pop("hostname")
    second["linux"]["namespaces"] = [{"type": "mount"}] + [
        {"type": t, "path": "FIRST"} for t in ("pid", "network", "ipc", "uts")]
    r = go(run_container, busybox_rootfs, first, joiner=second, kill=True)
    assert r.data["joiner_exit"] == 0
    pid, host, sleeps, nets = r.stdout.split()
    assert pid != "1" and host == "pod-ns" and sleeps == "1" and nets == "1"


def test_overlay_from_annotation_with_many_lowers(busybox_rootfs, run_container, tmp_path):
    """250 long lowerdir paths overflow mount(2)'s 4 KiB options: fsconfig adds them one by one."""
    from runtime.rootfs import OVERLAY_ANNOTATION

    layers = tmp_path / ("layers-" + "x" * 40)
    lowers = []
    for i in range(250):
        d = layers / f"layer-{i:03d}-{'y' * 20}"
        d.mkdir(parents=True)
        lowers.append(str(d))
    (Path(lowers[7]) / "top.txt").write_text("from layer 7\n")
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    spec = sh(merged, "cat /top.txt; echo hi > /w")
    ov = {"lowerdirs": lowers + [str(busybox_rootfs)], "upperdir": str(upper),
          "workdir": str(work), "options": ["volatile"]}
    assert len(":".join(ov["lowerdirs"])) > 4096
    spec["annotations"] = {OVERLAY_ANNOTATION: json.dumps(ov)}
    r = go(run_container, merged, spec)
    assert r.exit == 0, r
    assert r.stdout == "from layer 7\n"
    assert (upper / "w").read_text() == "hi\n"


def test_start_after_init_died(busybox_rootfs, run_container):
    r = go(run_container, busybox_rootfs, sh(busybox_rootfs, "true"), kill_before_start=True)
    assert r.data == {"error": "container init exited before start", "stage": "start"}
