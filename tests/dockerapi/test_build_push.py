"""Build and push through docker-py on berthd's Docker socket: the classic builder's protocol."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid

import docker
import pytest

pytestmark = pytest.mark.timeout(240)


def context(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            raw = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(raw), 0o644
            tf.addfile(ti, io.BytesIO(raw))
    buf.seek(0)
    return buf


def build(dclient: docker.DockerClient, files: dict[str, str], **kw) -> tuple[str, str]:
    """(image id, everything the stream said); raises BuildError on an error message."""
    lines = list(dclient.api.build(fileobj=context(files), custom_context=True, decode=True,
                                   rm=True, **kw))
    said = "".join(m.get("stream", "") for m in lines)
    errors = [m["error"] for m in lines if "error" in m]
    if errors:
        raise docker.errors.BuildError(errors[0], lines)
    ids = [m["aux"]["ID"] for m in lines if "aux" in m and "ID" in m["aux"]]
    assert ids, said
    return ids[-1], said


def test_build_run_push_and_pull_back(dclient, busybox, registry, cleanup) -> None:
    repo = f"{registry.host}/built-{uuid.uuid4().hex[:8]}"
    files = {"Dockerfile": f"FROM {busybox} AS base\nRUN echo staged > /s\n"
                           f"FROM {busybox}\nCOPY --from=base /s /s\nCOPY hello.txt /h\n"
                           "ENV WHO=docker\nCMD [\"sh\", \"-c\", \"cat /s /h; echo $WHO\"]\n",
             "hello.txt": "hello\n"}
    image_id, said = build(dclient, files, tag=f"{repo}:1")
    assert f"Successfully tagged {repo}:1" in said
    out = dclient.containers.run(f"{repo}:1", remove=True)
    assert out == b"staged\nhello\ndocker\n"
    again, said2 = build(dclient, files, tag=f"{repo}:1")
    assert again == image_id and said2.count("Using cache") == 5

    lines = list(dclient.api.push(repo, tag="1", stream=True, decode=True))
    assert not [m for m in lines if "error" in m], lines
    aux = [m["aux"] for m in lines if "aux" in m]
    assert aux and aux[0]["Tag"] == "1"
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:1"],
                         check=True, capture_output=True, text=True).stdout
    assert aux[0]["Digest"] in raw

    dclient.images.remove(f"{repo}:1", force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        dclient.images.get(image_id)
    dclient.images.pull(repo, tag="1")
    assert dclient.images.get(f"{repo}:1").id == image_id
    assert dclient.containers.run(f"{repo}:1", remove=True) == out


def test_build_errors(dclient, busybox) -> None:
    with pytest.raises(docker.errors.BuildError, match="returned a non-zero code: 7"):
        build(dclient, {"Dockerfile": f"FROM {busybox}\nRUN exit 7\n"})
    with pytest.raises(docker.errors.BuildError, match="unknown instruction"):
        build(dclient, {"Dockerfile": f"FROM {busybox}\nBOGUS x\n"})
    # docker-py checks tags itself: send the raw request, as another client might
    api = dclient.api
    for params in ({"t": "Not A Tag"}, {"buildargs": "[1]"}, {"networkmode": "bogus"},
                   {"version": "2"}):
        resp = api.post(api._url("/build"), params=params, headers={
            "Content-Type": "application/x-tar"},
            data=context({"Dockerfile": f"FROM {busybox}\n"}).getvalue())
        assert resp.status_code == 400 and resp.json()["message"], (params, resp.text)


def test_push_unknown_image_is_404(dclient, registry) -> None:
    with pytest.raises(docker.errors.APIError) as exc:
        list(dclient.api.push(f"{registry.host}/nothing-here", tag="1", stream=True,
                              decode=True))
    assert exc.value.response.status_code == 404
    assert "does not exist locally" in str(exc.value)


def _run_by_cri(client, image: str, tmp_path, name: str) -> str:
    """A pod and one container through CRI; returns what the container printed."""
    from tests.fixtures.cri_client import sandbox_config

    pb = client.pb
    log_dir = tmp_path / f"logs-{name}"
    pod_cfg = sandbox_config(client, name, str(log_dir))
    pod = client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg),
                                       timeout=60).pod_sandbox_id
    try:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=image), log_path=f"{name}.log")
        cid = client.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg), timeout=60).container_id
        client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                                timeout=10).status
            if st.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.1)
        return "".join(line.split(" ", 3)[3] + "\n"
                       for line in (log_dir / f"{name}.log").read_text().splitlines())
    finally:
        client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod),
                                        timeout=60)


def test_built_image_is_plain_oci_for_cri_and_containerd(dclient, busybox, registry, berthd,
                                                         containerd, tmp_path) -> None:
    """Built on Berth: kubelet's CRI on the same node runs it without a pull; pushed, the
    containerd peer pulls and runs it the same, its incompressible layer (stored at gzip
    level 0) included."""
    from tests.fixtures.cri_client import CriClient

    repo = f"{registry.host}/oci-{uuid.uuid4().hex[:8]}"
    files = {"Dockerfile": f"FROM {busybox}\nRUN echo layered > /l\n"
                           "RUN head -c 5000000 /dev/urandom > /noise\n"
                           "CMD [\"sh\", \"-c\", \"cat /l; wc -c < /noise\"]\n"}
    build(dclient, files, tag=f"{repo}:1")
    with berthd.client() as cri:
        listed = cri.image.ListImages(cri.pb.ListImagesRequest(), timeout=10).images
        assert any(f"{repo}:1" in i.repo_tags for i in listed)  # no pull needed
        assert _run_by_cri(cri, f"{repo}:1", tmp_path, "built-on-berth") == \
            "layered\n5000000\n"
    lines = list(dclient.api.push(repo, tag="1", stream=True, decode=True))
    assert not [m for m in lines if "error" in m], lines
    with CriClient(containerd, "containerd") as ctrd:
        ctrd.image.PullImage(ctrd.pb.PullImageRequest(
            image=ctrd.pb.ImageSpec(image=f"{repo}:1")), timeout=120)
        assert _run_by_cri(ctrd, f"{repo}:1", tmp_path, "built-pulled") == \
            "layered\n5000000\n"
