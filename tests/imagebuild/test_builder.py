"""The classic builder in-process, on the real monitor, kernel and loopback registry."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.imagebuild.builder import BuildError, BuildOptions, build
from engine.imagebuild.cache import BuildCache
from engine.imagebuild.context import Spool, Spooled
from engine.imagebuild.runner import Runner
from runtime.bundle import mount_overlay, unmount
from runtime.containers import ensure_monitor
from runtime.images.records import Image
from runtime.images.store import ImageStore
from tests.runtime_monitor.conftest import cgroup_parent  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(240)

DOCKERFILE = """\
# a comment
ARG BASE
FROM ${BASE} AS build
RUN echo built > /out.txt && mkdir -p /opt/b && echo x > /opt/b/y
FROM ${BASE}
ARG WHO=nobody
ENV GREETING="hello world" \\
    OTHER=${WHO}
LABEL org.test=yes "with space"="a b"
WORKDIR /app
COPY --from=build /out.txt ./
COPY src/ ./src/
COPY --chown=1000:1000 one.txt /owned/
ADD archive.tar /unpacked/
RUN echo "$GREETING from $WHO" > greeting && rm /bin/true
USER 1000
EXPOSE 8080 9000-9001/udp
VOLUME /data
HEALTHCHECK --interval=5s --retries=3 CMD ["true"]
STOPSIGNAL SIGINT
ONBUILD RUN echo child
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting"]
"""


def tar_of(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in sorted(files.items()):
            raw = data.encode() if isinstance(data, str) else data
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(raw), 0o644, 1_600_000_000
            tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def context_files(src_text: str = "v1") -> dict[str, bytes | str]:
    return {"Dockerfile": DOCKERFILE, "src/a.txt": src_text, "src/deep/b.txt": "b",
            "one.txt": "1", "archive.tar": tar_of({"inner/x.txt": "from the archive"})}


class Env:
    """A store, a monitor and a build cache on private dirs, all in one event loop."""

    def __init__(self, base: Path, cgroup: str) -> None:
        self.base, self.cgroup = base, cgroup
        self.state, self.run_dir = base / "state", base / "run"
        self.n = 0

    def run(self, job: Callable[[Env], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            self.monitor = await ensure_monitor(str(self.state), str(self.run_dir))
            self.store = ImageStore(self.state)
            self.cache = BuildCache(self.state / "build")
            try:
                return await job(self)
            finally:
                await self.store.aclose()
                await self.monitor.shutdown()

        return asyncio.run(main())

    async def build(self, files: dict[str, bytes | str], **opts: Any
                    ) -> tuple[Image, list[dict[str, Any]]]:
        self.n += 1
        ctx = self.base / f"ctx-{self.n}.tar"
        ctx.write_bytes(tar_of(files))
        msgs: list[dict[str, Any]] = []
        img = await build(self.store, Runner(self.monitor, self.cgroup), self.cache,
                          self.state / "build", ctx, BuildOptions(**opts), msgs.append)
        return img, msgs


def text(msgs: list[dict[str, Any]]) -> str:
    return "".join(m.get("stream", "") for m in msgs)


def read_tree(store: ImageStore, img: Image, work: Path, paths: list[str]) -> dict[str, Any]:
    """Mount the image's layers read-only-ish and read some paths (None when absent)."""
    target, up, wk = work / "m", work / "u", work / "w"
    for d in (target, up, wk):
        d.mkdir(parents=True)
    mount_overlay(str(target), store.rootfs_lowers(img.id), str(up), str(wk))
    try:
        out: dict[str, Any] = {}
        for p in paths:
            full = target / p.lstrip("/")
            if full.is_file():
                st = full.stat()
                out[p] = (full.read_bytes().decode(errors="replace"), st.st_uid)
            else:
                out[p] = full.is_dir() or None
        return out
    finally:
        unmount(str(target))
        shutil.rmtree(work)


def stat_tree(store: ImageStore, img: Image, work: Path, top: str) -> dict[str, Any]:
    """Under top in the image: each path's mode, owner, mtime and (for files) bytes."""
    target, up, wk = work / "m", work / "u", work / "w"
    for d in (target, up, wk):
        d.mkdir(parents=True)
    mount_overlay(str(target), store.rootfs_lowers(img.id), str(up), str(wk))
    try:
        out: dict[str, Any] = {}
        root = target / top.lstrip("/")
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime),
                                             p.read_bytes() if p.is_file() else None)
        return out
    finally:
        unmount(str(target))
        shutil.rmtree(work)


@pytest.fixture
def env(tmp_path: Path, cgroup_parent: str) -> Env:  # noqa: F811
    return Env(tmp_path, cgroup_parent)


def test_build_every_instruction_then_cache(env: Env, e2e_images, tmp_path: Path) -> None:
    base = e2e_images["busybox"].ref
    tag = f"127.0.0.1:5/built-{uuid.uuid4().hex[:6]}:1"

    async def job(e: Env) -> None:
        img, msgs = await e.build(context_files(), tags=[tag],
                                  build_args={"BASE": base, "WHO": "tester"})
        out = text(msgs)
        assert "Step 1/20 : FROM " in out and f"Successfully tagged {tag}" in out
        assert any(
            m.get("aux", {}).get("ID") == img.id for m in msgs)
        cfg = e.store.config(img.id)
        c = cfg["config"]
        assert "GREETING=hello world" in c["Env"] and "OTHER=tester" in c["Env"]
        assert c["Labels"]["org.test"] == "yes" and c["Labels"]["with space"] == "a b"
        assert c["WorkingDir"] == "/app" and c["User"] == "1000"
        assert set(c["ExposedPorts"]) == {"8080/tcp", "9000/udp", "9001/udp"}
        assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGINT"
        assert c["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 5 * 10**9,
                                    "Retries": 3}
        assert c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["cat greeting"]
        assert c["OnBuild"] == ["RUN echo child"]
        assert len(cfg["history"]) == 18 and len(img.layers) == len(img.diff_ids)
        tree = await asyncio.to_thread(read_tree, e.store, img, tmp_path / "t1", [
            "/app/out.txt", "/app/src/a.txt", "/app/src/deep/b.txt", "/owned/one.txt",
            "/unpacked/inner/x.txt", "/app/greeting", "/bin/true", "/bin/sh", "/opt/b/y"])
        assert tree["/app/out.txt"] == ("built\n", 0)
        assert tree["/app/src/a.txt"] == ("v1", 0) and tree["/app/src/deep/b.txt"][0] == "b"
        assert tree["/owned/one.txt"] == ("1", 1000)
        assert tree["/unpacked/inner/x.txt"][0] == "from the archive"
        assert tree["/app/greeting"][0] == "hello world from tester\n"
        assert tree["/bin/true"] is None and tree["/bin/sh"] is not None
        assert tree["/opt/b/y"] is None  # only the first stage had it

        # unchanged: every step from the cache, no RUN runs, same image ID
        again, msgs2 = await e.build(context_files(), tags=[tag],
                                     build_args={"BASE": base, "WHO": "tester"})
        assert again.id == img.id
        assert text(msgs2).count("Using cache") == 18

        # one copied file changed: the steps before that COPY hit, the rest run
        third, msgs3 = await e.build(context_files("v2"), tags=[tag],
                                     build_args={"BASE": base, "WHO": "tester"})
        assert third.id != img.id
        t3 = text(msgs3)
        before, after = t3.split("COPY src/ ./src/", 1)
        assert before.count("Using cache") == 6 and "Using cache" not in after
        tree3 = await asyncio.to_thread(read_tree, e.store, third, tmp_path / "t3",
                                        ["/app/src/a.txt"])
        assert tree3["/app/src/a.txt"] == ("v2", 0)

    env.run(job)


def test_target_onbuild_and_failures(env: Env, e2e_images) -> None:
    base = e2e_images["busybox"].ref

    async def job(e: Env) -> None:
        parent, _ = await e.build({"Dockerfile": f"FROM {base}\nONBUILD RUN echo trig > /t\n"},
                                  tags=["127.0.0.1:5/parent:1"])
        child, msgs = await e.build({"Dockerfile": "FROM 127.0.0.1:5/parent:1\n"})
        assert "build trigger" in text(msgs)
        assert e.store.config(child.id)["config"].get("OnBuild") is None
        staged, _ = await e.build({"Dockerfile": f"FROM {base} AS one\nLABEL s=1\n"
                                                 f"FROM {base} AS two\nLABEL s=2\n"},
                                  target="one")
        assert e.store.config(staged.id)["config"]["Labels"] == {"s": "1"}
        with pytest.raises(BuildError, match="returned a non-zero code: 3"):
            await e.build({"Dockerfile": f"FROM {base}\nRUN exit 3\n"})
        with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
            await e.build({"Dockerfile": f"FROM {base}\n"}, target="nope")
        with pytest.raises(BuildError, match="unknown instruction: FOO"):
            await e.build({"Dockerfile": f"FROM {base}\nFOO bar\n"})
        with pytest.raises(BuildError, match="file not found in build context"):
            await e.build({"Dockerfile": f"FROM {base}\nCOPY missing /x\n"})
        with pytest.raises(BuildError, match="Cannot locate specified Dockerfile"):
            await e.build({"x": "y"})

    env.run(job)
    assert not list((env.state / "build").glob("build-*"))  # work dirs are gone
    assert not [p for p in (env.state / "images" / "snapshots").iterdir()
                if p.name.startswith(".tmp-")]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(env.state) not in mounts


def hostile(entries: list[tarfile.TarInfo]) -> dict[str, bytes | str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        df = f"FROM {os.environ.get('BASE_REF', 'x')}\n".encode()
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(df)
        tf.addfile(ti, io.BytesIO(df))
        for e in entries:
            tf.addfile(e, io.BytesIO(b"") if e.isreg() else None)
    return {"__raw__": buf.getvalue()}


@pytest.mark.parametrize("via", ["file", "spool"])
@pytest.mark.parametrize(("kind", "message"), [
    ("dotdot", "points outside the context"),
    ("absolute", "absolute path"),
    ("device", "device node"),
    ("hardlink-out", "points outside the context"),
])
def test_hostile_context_is_refused(env: Env, kind: str, message: str, via: str,
                                    tmp_path: Path) -> None:
    """Refused whether the tar is read from its file or on its way in (POST /build's spool)."""
    ti = tarfile.TarInfo({"dotdot": "../escape", "absolute": "/etc/evil",
                          "device": "dev/sda", "hardlink-out": "hl"}[kind])
    if kind == "device":
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 8, 0
    if kind == "hardlink-out":
        ti.type, ti.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    ctx = tmp_path / "ctx.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(ti)
    source: Path | Spooled = ctx
    if via == "file":
        ctx.write_bytes(buf.getvalue())
    else:
        spool = Spool(ctx)
        spool.write(buf.getvalue())
        source = spool.finish()
        spool.close()
    before = set(os.listdir(tmp_path.parent))

    async def job(e: Env) -> None:
        with pytest.raises(BuildError, match=message):
            await build(e.store, Runner(e.monitor, e.cgroup), e.cache, e.state / "build",
                        source, BuildOptions(), lambda m: None)

    env.run(job)
    assert set(os.listdir(tmp_path.parent)) == before
    assert not Path("/etc/evil").exists()


def test_symlinks_in_the_context_stay_in_the_context(env: Env, e2e_images,
                                                     tmp_path: Path) -> None:
    base = e2e_images["busybox"].ref
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        df = f"FROM {base}\nCOPY etc-link/hostname /got\n".encode()
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(df)
        tf.addfile(ti, io.BytesIO(df))
        ln = tarfile.TarInfo("etc-link")
        ln.type, ln.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(ln)
    ctx = tmp_path / "ctx.tar"
    ctx.write_bytes(buf.getvalue())

    async def job(e: Env) -> None:
        # /etc resolves to <context>/etc, which does not exist: the host's /etc is never read
        with pytest.raises(BuildError, match="file not found in build context"):
            await build(e.store, Runner(e.monitor, e.cgroup), e.cache, e.state / "build", ctx,
                        BuildOptions(), lambda m: None)

    env.run(job)


def test_context_read_in_place_or_unpacked_copies_the_same(env: Env, e2e_images,
                                                           tmp_path: Path) -> None:
    """A plain context is read from its tar in place (from the file, or on its way in); one
    with a symlink is unpacked first. All give a COPY the same cache key and write the same
    layer."""
    base = e2e_images["busybox"].ref
    df = f"FROM {base}\nCOPY src/ /app/\nCOPY ../src/sub/b.txt /one\n".encode()

    def context(with_link: bool) -> Path:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            def add(name: str, data: bytes | None, mode: int, uid: int = 0) -> None:
                ti = tarfile.TarInfo(name)
                ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, uid, 1_600_000_000 + len(name)
                if data is None:
                    ti.type = tarfile.DIRTYPE
                else:
                    ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data or b""))

            add("Dockerfile", df, 0o644)
            add("src", None, 0o750, 5)
            add("src/a.txt", b"a" * 70_000, 0o600, 7)
            add("src/sub", None, 0o700)
            add("src/sub/b.txt", b"b", 0o755)
            if with_link:
                ln = tarfile.TarInfo("elsewhere")
                ln.type, ln.linkname = tarfile.SYMTYPE, "/etc"
                tf.addfile(ln)
        path = tmp_path / f"ctx-{with_link}.tar"
        path.write_bytes(buf.getvalue())
        return path

    async def job(e: Env) -> None:
        async def go(with_link: bool, nocache: bool) -> tuple[Image, str]:
            msgs: list[dict[str, Any]] = []
            img = await build(e.store, Runner(e.monitor, e.cgroup), e.cache, e.state / "build",
                              context(with_link), BuildOptions(nocache=nocache), msgs.append)
            return img, text(msgs)

        in_place, _ = await go(False, nocache=False)
        unpacked, _ = await go(True, nocache=True)
        assert unpacked.diff_ids[-1] == in_place.diff_ids[-1]  # /one: the same tar
        _, out = await go(True, nocache=False)
        assert out.count("Using cache") == 2
        # read on its way in (POST /build's spool), hashed as it passed: the same keys
        raw = context(False).read_bytes()
        spool = Spool(tmp_path / "spooled.tar")
        for i in range(0, len(raw), 5000):
            spool.write(raw[i:i + 5000])
        spooled = spool.finish()
        spool.close()
        assert spooled.tree is not None
        msgs: list[dict[str, Any]] = []
        try:
            await build(e.store, Runner(e.monitor, e.cgroup), e.cache, e.state / "build",
                        spooled, BuildOptions(), msgs.append)
        finally:
            spooled.close()
        assert text(msgs).count("Using cache") == 2
        # /app itself is made at copy time, so its layer differs in /app's mtime: compare
        # what the COPY put in it
        got = [await asyncio.to_thread(stat_tree, e.store, img, tmp_path / f"t{i}", "/app")
               for i, img in enumerate((in_place, unpacked))]
        assert got[0] == got[1]
        assert got[0]["a.txt"] == (0o100600, 0, 0, 1_600_000_009, b"a" * 70_000)
        assert got[0]["sub"][:4] == (0o40700, 0, 0, 1_600_000_007)

    env.run(job)


def test_add_from_a_loopback_url(env: Env, e2e_images) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b"downloaded\n" if self.path == "/files/data.txt" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    base = e2e_images["busybox"].ref

    async def job(e: Env) -> None:
        img, _ = await e.build({"Dockerfile": f"FROM {base}\nADD {url}/files/data.txt /dl/\n"
                                              "RUN stat -c %a /dl/data.txt > /mode\n"})
        tree = await asyncio.to_thread(read_tree, e.store, img, env.base / "t", [
            "/dl/data.txt", "/mode"])
        assert tree["/dl/data.txt"][0] == "downloaded\n" and tree["/mode"][0] == "600\n"
        with pytest.raises(BuildError, match="got HTTP status code 404"):
            await e.build({"Dockerfile": f"FROM {base}\nADD {url}/missing /x\n"})

    try:
        env.run(job)
    finally:
        srv.shutdown()
        srv.server_close()
