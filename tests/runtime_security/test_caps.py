"""Capabilities on the real kernel, applied in a fresh subprocess in the container init's order."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runtime.caps import CAPS, default_caps, drop_bounding, mask, numbers, set_ambient
from tests.runtime_security.conftest import REPO

pytestmark = pytest.mark.timeout(30)
KEEP = {"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"}


def status_caps(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in text.splitlines() if line.startswith("Cap")}


def run_init(body: str) -> str:
    code = "import os, sys\nfrom runtime import caps\n" + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_root_process_drops_to_a_set() -> None:
    out = run_init(f"""
        keep = {sorted(KEEP)!r}
        caps.drop_bounding(set(keep))
        caps.set_caps(set(keep), set(keep), set(keep))
        caps.set_ambient({{"CAP_NET_BIND_SERVICE"}})
        print(open("/proc/self/status").read())
    """)
    got = status_caps(out)
    assert got["CapBnd"] == mask(KEEP) and got["CapEff"] == mask(KEEP)
    assert got["CapPrm"] == mask(KEEP) and got["CapInh"] == mask(KEEP)
    assert got["CapAmb"] == mask({"CAP_NET_BIND_SERVICE"})


def test_non_root_keeps_ambient_caps_across_exec() -> None:
    amb = {"CAP_NET_BIND_SERVICE"}
    out = run_init(f"""
        keep = {sorted(KEEP)!r}
        caps.drop_bounding(set(keep))
        caps.set_keepcaps(True)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        caps.set_caps(set(keep), set(keep), set(keep))
        caps.set_ambient({sorted(amb)!r})
        caps.set_keepcaps(False)
        os.execv("/bin/cat", ["cat", "/proc/self/status"])
    """)
    got = status_caps(out)
    assert "Uid:\t65534" in out
    assert got["CapBnd"] == mask(KEEP)
    assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == mask(amb)


def test_without_keepcaps_setuid_clears_permitted() -> None:
    out = run_init("""
        os.setuid(65534)
        print(open("/proc/self/status").read())
    """)
    assert status_caps(out)["CapPrm"] == 0


def test_names_and_defaults() -> None:
    assert CAPS["CAP_CHOWN"] == 0 and CAPS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(default_caps()) == 14
    assert mask(default_caps()) == 0xA80425FB  # what docker/containerd containers show
    assert numbers(["net_raw", "CAP_KILL"]) == {13, 5}
    with pytest.raises(ValueError, match="CAP_BOGUS"):
        drop_bounding({"CAP_BOGUS"})
    with pytest.raises(ValueError, match="CAP_NOPE"):
        set_ambient({"CAP_CHOWN", "CAP_NOPE"})
