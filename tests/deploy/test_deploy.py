"""deploy/: the unit verifies, the config is the embedded default, paths agree across files."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from cni_plugins.install import PLUGINS
from engine import config as configmod
from runtime.network import conf as cniconf

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL_ROOT = "/opt/berth"  # where docs/deploy.md puts the checkout; the unit points there


def _systemd_analyze() -> str:
    """Debian's systemd package ships it; install it only when absent (it is a heavy package)."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip(f"systemd-analyze unavailable and apt-get install systemd failed: "
                    f"{res.stderr.strip()[-300:]}")
    return found


@pytest.mark.timeout(660)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (DEPLOY / "berthd.service").read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert keys["Restart"] == "always"
    assert keys["KillMode"] == "process"
    assert keys["Delegate"] == "yes"
    assert keys["ExecStart"].startswith(f"{INSTALL_ROOT}/.venv/bin/berthd ")
    assert f"--config {configmod.DEFAULT_CONFIG_PATH}" in keys["ExecStart"]
    # verify checks that ExecStart exists: point it at this checkout's venv, nothing else changes
    (tmp_path / "berthd.service").write_text(unit.replace(INSTALL_ROOT, str(REPO)))
    res = subprocess.run([_systemd_analyze(), "verify", str(tmp_path / "berthd.service")],
                         capture_output=True, text=True, timeout=120, check=False)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if "berthd.service" in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_config_file_parses_and_equals_embedded_defaults() -> None:
    loaded = configmod.load(str(DEPLOY / "berth.toml"))
    assert asdict(loaded) == asdict(configmod.Config())


def _keys(d: dict[str, object], prefix: str = "") -> set[str]:
    """Dotted key paths; tables recurse, except mirrors whose keys are registry hosts."""
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and k != "mirrors":
            out |= _keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_config_file_names_every_key() -> None:
    """Fully commented means complete: every key of the embedded config is in the file."""
    data = tomllib.loads((DEPLOY / "berth.toml").read_text())
    assert _keys(data) == _keys(asdict(configmod.Config()))


def _endpoint(path: str) -> str:
    return f"unix://{path}"


def test_socket_paths_agree() -> None:
    sock = _endpoint(configmod.load(str(DEPLOY / "berth.toml")).socket_path)
    crictl = dict(re.findall(r"^([\w-]+):\s*(\S+)", (DEPLOY / "crictl.yaml").read_text(), re.M))
    assert crictl["runtime-endpoint"] == sock
    assert crictl["image-endpoint"] == sock
    kubelet_text = (DEPLOY / "kubelet-config.yaml").read_text()
    kubelet = dict(re.findall(r"^(\w+):\s*(\S+)", kubelet_text, re.M))
    assert kubelet["containerRuntimeEndpoint"] == sock
    assert kubelet["imageServiceEndpoint"] == sock
    assert kubelet["cgroupDriver"] == configmod.Config().runtime.cgroup_driver
    assert f"--container-runtime-endpoint={sock}" in kubelet_text
    assert f"--cgroup-driver={configmod.Config().runtime.cgroup_driver}" in kubelet_text


def test_conflist_parses_and_matches_the_defaults() -> None:
    path = DEPLOY / "10-berth.conflist"
    net = cniconf.parse(path.read_bytes(), str(path))
    assert net.plugin_types() == ["bridge", "host-local", "portmap"]
    bridge = net.plugins[0]
    assert bridge["bridge"] == "berth0"
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == configmod.Config().cni.default_subnet
    plugin_dir = configmod.Config().cni.bin_dirs[0]
    assert plugin_dir == "/usr/libexec/berth/cni"
    assert set(net.plugin_types()) <= set(PLUGINS)  # all of them Berth's own


def test_install_script_lists_systemd() -> None:
    script = (DEPLOY / "install.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\((.*?)\)", script, re.S)
    assert packages and "systemd" in packages.group(1).split()


def test_install_script_prepares_the_guest_stage() -> None:
    """`--test` needs QEMU, kmod (depmod) and xz for tests/guest, and the kernel unpacked."""
    script = (DEPLOY / "install.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\((.*?)\)", script, re.S)
    assert packages and {"qemu-system-x86", "kmod", "xz-utils", "busybox-static"} <= set(
        packages.group(1).split())
    assert "deploy/guest/v2guest.sh setup" in script


@pytest.mark.parametrize("shell, name", [("bash", "v2guest.sh"), ("busybox", "guest-init.sh"),
                                         ("busybox", "guest-stage2.sh")])
def test_guest_scripts_parse(shell: str, name: str) -> None:
    args = ["busybox", "sh", "-n"] if shell == "busybox" else ["bash", "-n"]
    subprocess.run([*args, str(DEPLOY / "guest" / name)], check=True)


def test_deploy_doc_names_real_files_and_the_socket() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    for name in set(re.findall(r"deploy/([\w.-]+)", doc)):
        assert (DEPLOY / name).exists(), f"docs/deploy.md names deploy/{name}"
    sock = configmod.load(str(DEPLOY / "berth.toml")).socket_path
    assert set(re.findall(r"unix://(/run/berth/[\w.]+)", doc)) == {sock}
    assert "/usr/libexec/berth/cni" in doc and "KillMode=process" in doc
