"""runtime.overlay: every way of naming many lowers mounts the same merged tree, on this kernel.

The `lowerdir+` way needs Linux 6.8; the fd-number way is what kernels before it use, and is
forced here so the host (6.18) covers it too. The guest stage runs this file on 6.1, where
`appending_supported()` must say no.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import overlay
from runtime.bundle import unmount

pytestmark = pytest.mark.timeout(120)
LAYERS = 300  # ~60 B per absolute path here: far past mount(2)'s one page


def _layers(tmp_path: Path) -> overlay.OverlaySpec:
    base = tmp_path / ("layers-" + "x" * 30)
    lowers = []
    for i in range(LAYERS):
        d = base / f"layer-{i:03d}-{'y' * 16}"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        (d / "shadowed").write_text(str(i))
        lowers.append(str(d))
    for sub in ("upper", "work", "merged"):
        (tmp_path / sub).mkdir()
    spec = overlay.OverlaySpec(lowers, str(tmp_path / "upper"), str(tmp_path / "work"))
    assert len(spec.data(lowers)) > overlay.MAX_MOUNT_DATA
    return spec


def _check_and_unmount(merged: Path, upper: Path) -> None:
    try:
        assert (merged / "shadowed").read_text() == "0"  # the top layer wins
        assert (merged / f"f{LAYERS - 1}").read_text() == str(LAYERS - 1)
        (merged / "w").write_text("hi")
        assert (upper / "w").read_text() == "hi"
    finally:
        unmount(str(merged))
    assert not os.path.ismount(merged)


def test_appending_is_probed_by_kernel_version() -> None:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert overlay.appending_supported() == ((major, minor) >= (6, 8))


def test_default_way_mounts_many_lowers(tmp_path: Path) -> None:
    spec = _layers(tmp_path)
    overlay.mount(str(tmp_path / "merged"), spec, threaded=True)
    _check_and_unmount(tmp_path / "merged", tmp_path / "upper")


def test_fd_names_through_a_helper_process(tmp_path: Path) -> None:
    """What berthd does on a kernel before 6.8: mount(8) in a child started in its fd dir."""
    spec = _layers(tmp_path)
    overlay.mount_by_fd(str(tmp_path / "merged"), spec, threaded=True)
    _check_and_unmount(tmp_path / "merged", tmp_path / "upper")


def test_fd_names_in_a_single_threaded_process(tmp_path: Path) -> None:
    """What container init does: chdir to /proc/self/fd itself (in a fresh process here)."""
    spec = _layers(tmp_path)
    code = ("import os, sys; from runtime import overlay; "
            "s = overlay.OverlaySpec(sys.argv[2:], sys.argv[1] + '/upper', sys.argv[1] + '/work'); "
            "cwd = os.getcwd(); overlay.mount_by_fd(sys.argv[1] + '/merged', s, threaded=False); "
            "assert os.getcwd() == cwd")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), *spec.lowers], check=True,
                   cwd=Path(__file__).parents[2])
    _check_and_unmount(tmp_path / "merged", tmp_path / "upper")


def test_a_lower_with_a_colon_is_mounted_whole(tmp_path: Path) -> None:
    """':' separates lowers in an option string: such a path takes the path-free ways."""
    lower = tmp_path / "a:b,c"
    lower.mkdir()
    (lower / "f").write_text("x")
    for sub in ("upper", "work", "merged"):
        (tmp_path / sub).mkdir()
    spec = overlay.OverlaySpec([str(lower)], str(tmp_path / "upper"), str(tmp_path / "work"))
    overlay.mount(str(tmp_path / "merged"), spec, threaded=True)
    try:
        assert (tmp_path / "merged/f").read_text() == "x"
    finally:
        unmount(str(tmp_path / "merged"))


def test_options_past_one_page_are_a_clear_error(tmp_path: Path) -> None:
    """Even short fd names cannot help when upper and work alone fill the page."""
    spec = overlay.OverlaySpec([str(tmp_path)] * 2, "/" + "u" * 2000, "/" + "w" * 2000)
    with pytest.raises(OSError, match="do not fit"):
        overlay.mount_by_fd(str(tmp_path), spec, threaded=True)
