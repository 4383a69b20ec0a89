"""Property test: whatever entries a layer holds, nothing outside the snapshot changes."""

from __future__ import annotations

import contextlib
import shutil
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.images.reference import normalize
from runtime.images.unpack import UnpackError, apply_layer
from tests.images.tarkit import Layer
from tests.images.test_unpack_hostile import Sandbox

_SENTINEL = "/tmp/berth-fuzz-sentinel"  # replaced by the real sandbox path per example
COMPONENTS = ["a", "esc", "esc", "..", ".", ".wh.a", ".wh.passwd", ".wh..wh..opq", ".wh..",
              "etc", "passwd"]
TARGETS = ["/", "..", "../../..", "../../../host", "../../../host/etc", "a", "/etc", "esc/a",
           _SENTINEL, f"{_SENTINEL}/etc", f"{_SENTINEL}/etc/passwd"]

names = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join)
# half of the names go through the symlink an attack would plant
names = st.one_of(st.sampled_from(["esc", "esc/passwd", "esc/.wh.passwd", "esc/.wh..wh..opq",
                                   "esc/x/y", "/esc/passwd"]),
                  names, names.map(lambda n: "/" + n))
entry = st.tuples(st.sampled_from(["file", "dir", "symlink", "link", "fifo", "chr"]), names,
                  st.sampled_from(TARGETS + ["a", "b/a", "esc"]), st.sampled_from([0o644, 0o4777]))


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(TARGETS), st.lists(entry, min_size=1, max_size=8))
def test_random_layers_stay_inside(tmp_path_factory, planted: str, entries) -> None:
    top = tmp_path_factory.mktemp("fuzz")
    sb = Sandbox(top)
    try:
        layer = Layer().symlink("esc", planted.replace(_SENTINEL, str(sb.host)))
        for kind, name, target, mode in entries:
            target = target.replace(_SENTINEL, str(sb.host))
            if kind == "file":
                layer.file(name, b"pwned", mode=mode)
            elif kind == "dir":
                layer.dir(name, mode=mode | 0o700)
            elif kind == "symlink":
                layer.symlink(name, target)
            elif kind == "link":
                layer.link(name, target)
            else:
                layer.node(name, tarfile.FIFOTYPE if kind == "fifo" else tarfile.CHRTYPE, 1, 3,
                           mode=mode)
        with contextlib.suppress(UnpackError, OSError):
            apply_layer(layer.stream(), str(sb.root), [str(sb.lower)])
        sb.assert_host_untouched()
    finally:
        shutil.rmtree(top)


REPO = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)?(/[a-z0-9]+)?", fullmatch=True)
HOST = st.sampled_from(["", "localhost/", "127.0.0.1:5000/", "quay.io/", "docker.io/"])
TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(HOST, REPO, st.one_of(st.none(), TAG))
def test_normalize_is_idempotent(host: str, repo: str, tag: str | None) -> None:
    raw = host + repo + (f":{tag}" if tag else "")
    if len(raw) > 255:
        return
    once = normalize(raw)
    assert normalize(str(once)) == once
    assert once.tag == (tag or "latest")
