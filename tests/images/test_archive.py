"""Air-gapped import of skopeo-made oci-archive and docker-archive tarballs, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.images.archive import ArchiveError
from runtime.images.registry import host_platform
from runtime.images.store import ImageStore
from tests.fixtures.images import build_layouts
from tests.images.test_unpack_overlay import overlay

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    lay = build_layouts(["busybox", "layers", "multiarch"])
    d = tmp_path_factory.mktemp("archives")
    out = {}
    kinds = [("oci", "layers", "oci-archive"), ("docker", "busybox", "docker-archive"),
             ("multi", "multiarch", "oci-archive")]
    for name, src, dst in kinds:
        out[name] = d / f"{name}.tar"
        extra = ["--all"] if name == "multi" else []
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", *extra,
                        f"oci:{lay[src]}:1.0", f"{dst}:{out[name]}:e2e/{src}:1.0"], check=True)
    return out


def test_import_oci_archive(tmp_path: Path, archives) -> None:
    store = ImageStore(tmp_path)
    [img] = store.import_archive(archives["oci"])
    assert img.repo_tags == ["docker.io/e2e/layers:1.0"] and len(img.layers) == 4
    assert store.get("e2e/layers:1.0") is img
    with overlay(store.rootfs_lowers(img.id), tmp_path / "m") as m:
        assert (m / "data" / "keep.txt").read_text() == "keep\n"
        assert not (m / "data" / "remove-me.txt").exists()
        assert sorted(os.listdir(m / "data" / "opaque")) == ["new1", "new2"]


def test_import_docker_save(tmp_path: Path, archives) -> None:
    store = ImageStore(tmp_path)
    [img] = store.import_archive(archives["docker"])
    assert img.repo_tags == ["docker.io/e2e/busybox:1.0"]
    assert img.config.cmd == ["sh"]
    assert os.path.isfile(os.path.join(store.rootfs_lowers(img.id)[0], "bin", "busybox"))
    assert store.import_archive(archives["docker"])[0].id == img.id  # idempotent
    assert len(store.list()) == 1
    assert store.content.list() == set(img.blobs)  # no stray archive files left as blobs


@pytest.mark.skipif(host_platform().architecture != "amd64", reason="fixture index: amd64+arm64")
def test_import_multiarch_picks_host_platform(tmp_path: Path, archives) -> None:
    [img] = ImageStore(tmp_path).import_archive(archives["multi"])
    assert img.config.labels == {"berth.test/arch": "amd64"}


def test_import_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    store = ImageStore(tmp_path / "s")
    with pytest.raises(ArchiveError):
        store.import_archive(bad)
    assert store.list() == [] and store.content.list() == set()


def test_cli_import(tmp_path: Path, archives) -> None:
    out = subprocess.run([sys.executable, "-m", "runtime.images.cli", "import",
                          str(archives["docker"]), "--state-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "docker.io/e2e/busybox:1.0" in out and out.startswith("sha256:")
    listed = subprocess.run([sys.executable, "-m", "runtime.images.cli", "list",
                             "--state-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert listed == out
    err = subprocess.run([sys.executable, "-m", "runtime.images.cli", "import", "/nonexistent",
                          "--state-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert err.returncode == 1 and "error:" in err.stderr
