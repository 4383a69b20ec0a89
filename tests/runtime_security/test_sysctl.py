"""Pod sysctl validation (including CVE-2022-0811 injection) and apply in a fresh netns."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runtime.sysctl import apply, normalize, validate
from tests.runtime_security.conftest import REPO

pytestmark = pytest.mark.timeout(30)
PRIVATE = {"host_net": False, "host_ipc": False, "host_uts": False}
KEY = "net.ipv4.ip_unprivileged_port_start"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("net.ipv4.ip_unprivileged_port_start", "80"),
        ("net.ipv4.ip_local_port_range", "32768 60999"),
        ("net/ipv4/conf/all/route_localnet", "1"),
        ("net.core.somaxconn", "1024"),
        ("kernel.shm_rmid_forced", "1"),
        ("kernel.sem", "250 32000 32 128"),
        ("kernel.msgmax", "65536"),
        ("fs.mqueue.msg_max", "20"),
        ("kernel.hostname", "pod-1.example"),
    ],
)
def test_namespaced_sysctls_pass(name: str, value: str) -> None:
    validate({name: value}, **PRIVATE)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # CVE-2022-0811: a value smuggling a second assignment
        ("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/tmp/x", "forbidden"),
        ("kernel.shm_rmid_forced", "1\nkernel.core_pattern=|/x", "forbidden"),
        ("net.core.somaxconn", "1=2", "forbidden"),
        ("net.core.somaxconn", "1\x00", "forbidden"),
        ("net.core.somaxconn", "1;reboot", "forbidden"),
        ("net.core.somaxconn", "1\r", "forbidden"),
        ("net.core.somaxconn", "9" * 5000, "forbidden"),
        # names that try to leave /proc/sys/net or name several keys
        ("net.ipv4/../../kernel/core_pattern", "x", "malformed"),
        ("net.ipv4..conf", "1", "malformed"),
        ("net.core.somaxconn=1 kernel.x", "1", "malformed"),
        ("net.core.somaxconn\n", "1", "malformed"),
        ("/net.core.somaxconn", "1", "malformed"),
        ("", "1", "malformed"),
        # node-wide keys, whatever the namespaces
        ("kernel.core_pattern", "|/x", "not namespaced"),
        ("vm.overcommit_memory", "1", "not namespaced"),
        ("kernel.shmall_evil", "1", "not namespaced"),
        ("fs.file-max", "1", "not namespaced"),
    ],
)
def test_bad_sysctls_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate({name: value}, **PRIVATE)


@pytest.mark.parametrize(
    ("name", "flag"),
    [("net.core.somaxconn", "host_net"), ("kernel.msgmnb", "host_ipc"),
     ("fs.mqueue.queues_max", "host_ipc"), ("kernel.domainname", "host_uts")],
)
def test_host_namespace_refuses_its_sysctls(name: str, flag: str) -> None:
    with pytest.raises(ValueError, match="host"):
        validate({name: "1"}, **{**PRIVATE, flag: True})
    validate({name: "1"}, **{k: k != flag for k in PRIVATE})  # only its own namespace counts


def test_normalize_slash_form() -> None:
    assert normalize("net/ipv4/ip_forward") == "net.ipv4.ip_forward"
    assert normalize("net.ipv4.ip_forward") == "net.ipv4.ip_forward"


def test_apply_in_fresh_netns_changes_only_that_netns() -> None:
    with open(f"/proc/sys/{KEY.replace('.', '/')}") as f:
        host_before = f.read().strip()
    new = "443" if host_before != "443" else "444"
    code = (
        "from runtime.sysctl import apply, validate\n"
        f"s = {{'{KEY}': '{new}'}}\n"
        "validate(s, host_net=False, host_ipc=False, host_uts=False)\n"
        "apply(s)\n"
        f"print(open('/proc/sys/{KEY.replace('.', '/')}').read().strip())\n"
    )
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == new
    with open(f"/proc/sys/{KEY.replace('.', '/')}") as f:
        assert f.read().strip() == host_before


def test_apply_refuses_path_tricks(tmp_path: object) -> None:
    with pytest.raises(ValueError):
        apply({"net/../../kernel/core_pattern": "x"}, proc_sys=str(tmp_path))
