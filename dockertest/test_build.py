"""Builds with the classic builder (DOCKER_BUILDKIT=0 docker build, docker-py images.build),
run against every daemon: one Dockerfile that uses every instruction, the cache, .dockerignore."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from dockertest.harness import Daemon

DOCKERFILE = """\
# escape=\\
ARG BASE
FROM ${{BASE}} AS stage1
RUN ["sh", "-c", "echo from-stage-one > /stage1.txt"]

FROM --platform=linux/amd64 ${{BASE}}
ARG GREETING=hi
SHELL ["/bin/sh", "-c"]
ENV APP_HOME=/srv/app \\
    MODE="build test"
LABEL org.example.name="everything" org.example.version=1
WORKDIR $APP_HOME
COPY --from=stage1 /stage1.txt ./
COPY --chown=1000:1000 tree/ ./tree/
ADD notes.txt bundle.tar ./
RUN echo "$GREETING from RUN" > run.txt && mkdir -p /data && chown 1000 /data
EXPOSE 8080 9000/udp
VOLUME /data
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD ["true"]
STOPSIGNAL SIGUSR1
ONBUILD RUN echo child-build
USER 1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $MODE; pwd; id -u; cat stage1.txt run.txt notes.txt inner.txt tree/a.txt; \\
ls tree"]
"""


def _tar(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in members.items():
            raw = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(raw)
            tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def make_context(root: Path, base: str, a_text: str = "file-a") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format())
    (root / "tree").mkdir(exist_ok=True)
    (root / "tree" / "a.txt").write_text(a_text + "\n")
    (root / "tree" / "skip.log").write_text("ignored\n")
    (root / "tree" / "keep.log").write_text("kept by the ! exception\n")
    (root / "notes.txt").write_text("notes\n")
    (root / "bundle.tar").write_bytes(_tar({"inner.txt": "unpacked-by-ADD\n"}))
    (root / ".dockerignore").write_text("tree/*.log\n!tree/keep.log\n")
    (root / "base.txt").write_text(base)
    return root


def build(dk: Daemon, ctx: Path, tag: str, base: str) -> tuple[str, str]:
    res = dk.cli("build", "-t", tag, "--build-arg", f"BASE={base}",
                 "--build-arg", "GREETING=hello", str(ctx), timeout=300)  # fmt: skip
    image_id = dk.cli("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    return image_id, res.stdout


def _image_ids(dk: Daemon) -> set[str]:
    return {i["Id"] for i in dk.api.images(all=True)}


@pytest.fixture
def tag(dk: Daemon):
    """A fresh tag; every image the test built goes afterwards (dockerd keeps a rebuilt tag's
    old image dangling, and a dangling child of busybox would block other tests' rmi)."""
    before = _image_ids(dk)
    name = f"dt-build-{uuid.uuid4().hex[:8]}:1"
    yield name
    dk.cli("rmi", "-f", name, check=False)
    for _ in range(3):
        left = _image_ids(dk) - before
        if not left:
            break
        for image_id in left:
            dk.cli("rmi", "-f", image_id, check=False)


def test_every_instruction_with_the_cli(dk: Daemon, tag: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", dk.busybox)
    image_id, out = build(dk, ctx, tag, dk.busybox)
    assert f"Successfully tagged {tag}" in out
    run = dk.cli("run", "--rm", tag).stdout.splitlines()
    assert run[:3] == ["build test", "/srv/app", "1000"]
    assert run[3:8] == ["from-stage-one", "hello from RUN", "notes", "unpacked-by-ADD",
                        "file-a"]
    assert sorted(run[8:]) == ["a.txt", "keep.log"]  # .dockerignore, with its ! exception

    cfg = json.loads(dk.cli("image", "inspect", tag).stdout)[0]["Config"]
    assert cfg["Labels"] == {"org.example.name": "everything", "org.example.version": "1"}
    assert "APP_HOME=/srv/app" in cfg["Env"] and "MODE=build test" in cfg["Env"]
    assert cfg["User"] == "1000" and cfg["WorkingDir"] == "/srv/app"
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9000/udp"}
    assert cfg["Volumes"] == {"/data": {}} and cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"]["Test"] == ["CMD", "true"]
    assert cfg["Healthcheck"]["Interval"] == 30 * 10**9 and cfg["Healthcheck"]["Retries"] == 2
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["OnBuild"] == ["RUN echo child-build"]
    history = dk.cli("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
    for step in ("WORKDIR", "COPY", "HEALTHCHECK", "ENTRYPOINT", "from RUN"):
        assert step in history, history

    # unchanged: every step from the cache, the same image
    again_id, again = build(dk, ctx, tag, dk.busybox)
    assert again_id == image_id
    assert again.count("Using cache") >= 18, again
    # one copied file changed: only the steps from that COPY on run again
    (ctx / "tree" / "a.txt").write_text("changed\n")
    third_id, third = build(dk, ctx, tag, dk.busybox)
    assert third_id != image_id
    before, after = third.split("COPY --chown=1000:1000 tree/ ./tree/", 1)
    assert "Using cache" in before and "Using cache" not in after.split("Step", 2)[1]
    assert "changed" in dk.cli("run", "--rm", tag).stdout


def test_docker_py_build_and_target(dk: Daemon, tag: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", dk.busybox)
    img, logs = dk.client.images.build(path=str(ctx), tag=tag, target="stage1",
                                       buildargs={"BASE": dk.busybox})
    text = "".join(m.get("stream", "") for m in logs)
    assert "Successfully built" in text
    out = dk.client.containers.run(img.id, ["cat", "/stage1.txt"], remove=True)
    assert out == b"from-stage-one\n"


def test_onbuild_trigger_runs_in_the_child(dk: Daemon, tag: str, tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "Dockerfile").write_text(f"FROM {dk.busybox}\nONBUILD RUN echo trig > /t\n")
    dk.cli("build", "-t", tag, str(parent))
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text(f"FROM {tag}\n")
    out = dk.cli("build", "-q", str(child)).stdout.strip()
    assert dk.cli("run", "--rm", out, "cat", "/t").stdout == "trig\n"
    dk.cli("rmi", "-f", out, check=False)


def test_failing_run_fails_the_build(dk: Daemon, tag: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {dk.busybox}\nRUN echo before; exit 3\n")
    res = dk.cli("build", str(tmp_path), check=False)
    assert res.returncode != 0
    assert "returned a non-zero code: 3" in res.stderr + res.stdout


def test_copy_outside_the_context_is_refused(dk: Daemon, tag: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {dk.busybox}\nCOPY ../../etc/passwd /p\n")
    res = dk.cli("build", str(tmp_path), check=False)
    assert res.returncode != 0
    said = res.stderr + res.stdout
    assert "not found" in said or "outside" in said or "forbidden path" in said, said
