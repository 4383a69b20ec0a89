"""CRI → OCI translation: Docker's command rules, env merge, mounts, security, resources."""

import json
import subprocess

import pytest

from cri import ocisecurity, ocispec
from cri.errors import FailedPrecondition, InvalidArgument, NotFound
from proto import api_pb2 as pb
from runtime.images.records import ImageConfig
from tests.fixtures.hostclean import unmount_all

POD = ocispec.PodContext(id="p1", ns_paths={"network": "/run/x/net", "ipc": "/run/x/ipc",
                                            "uts": "/run/x/uts"},
                         files={"/etc/hosts": "/tmp/hosts"}, cgroup_parent="/kubepods/podu1")


def build(cfg: pb.ContainerConfig, image: ImageConfig | None = None) -> dict:
    return ocispec.build_spec(container_id="c1", cfg=cfg, image=image or ImageConfig(
        cmd=["sh"]), pod=POD, user=(0, 0, []), tty=False)


@pytest.mark.parametrize("command, args, entrypoint, cmd, expect", [
    ([], [], ["/ep"], ["c"], ["/ep", "c"]),
    (["/x"], [], ["/ep"], ["c"], ["/x"]),
    (["/x"], ["a"], ["/ep"], ["c"], ["/x", "a"]),
    ([], ["a"], ["/ep"], ["c"], ["/ep", "a"]),
    ([], [], [""], ["c"], ["c"]),
])
def test_docker_command_rules(command, args, entrypoint, cmd, expect):
    cfg = pb.ContainerConfig(command=command, args=args)
    assert ocispec.process_args(cfg, ImageConfig(entrypoint=entrypoint, cmd=cmd)) == expect


def test_no_command_is_invalid():
    with pytest.raises(InvalidArgument, match="no command"):
        ocispec.process_args(pb.ContainerConfig(), ImageConfig())


def test_env_merge_overrides_by_key():
    env = ocispec.merge_env(["A=1", "PATH=/bin"], [pb.KeyValue(key="A", value="2"),
                                                   pb.KeyValue(key="B", value="x=y")])
    assert env == ["A=2", "PATH=/bin", "B=x=y"]
    with pytest.raises(InvalidArgument, match="empty key"):
        ocispec.merge_env([], [pb.KeyValue(key="", value="v")])


def test_spec_shape_namespaces_and_cgroup(tmp_path):
    spec = build(pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app")))
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"mount": None, "network": "/run/x/net", "ipc": "/run/x/ipc",
                  "uts": "/run/x/uts", "pid": None, "cgroup": None}
    assert spec["linux"]["cgroupsPath"] == "kubepods/podu1/c1"
    assert spec["process"]["capabilities"]["bounding"] == sorted(ocisecurity.capsmod
                                                                 .default_caps())
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "seccomp" not in spec["linux"]
    json.dumps(spec)


@pytest.fixture
def shared_tmpfs(tmp_path):
    """A tmpfs made rshared: a source that can carry mount propagation."""
    d = tmp_path / "shared"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "berth-ocispec", str(d)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(d)], check=True)
        yield d
    finally:
        unmount_all(d)


def test_mount_validation(tmp_path, shared_tmpfs):
    ok = pb.Mount(container_path="/data", host_path=str(shared_tmpfs), readonly=True,
                  propagation=pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)
    spec = build(pb.ContainerConfig(mounts=[ok]))
    m = next(m for m in spec["mounts"] if m["destination"] == "/data")
    assert m["options"] == ["rbind", "rslave", "ro"]
    with pytest.raises(InvalidArgument, match="absolute"):
        build(pb.ContainerConfig(mounts=[pb.Mount(container_path="/d", host_path="rel")]))
    with pytest.raises(NotFound, match="does not exist"):
        build(pb.ContainerConfig(mounts=[pb.Mount(container_path="/d",
                                                  host_path=str(tmp_path / "none"))]))


def test_capabilities_add_drop_all():
    sec = pb.LinuxContainerSecurityContext(capabilities=pb.Capability(
        drop_capabilities=["ALL"], add_capabilities=["NET_ADMIN"]))
    assert ocisecurity.capabilities(sec) == ["CAP_NET_ADMIN"]
    sec = pb.LinuxContainerSecurityContext(capabilities=pb.Capability(
        drop_capabilities=["CHOWN"]))
    assert "CAP_CHOWN" not in ocisecurity.capabilities(sec)
    with pytest.raises(InvalidArgument, match="unknown capability CAP_BOGUS"):
        ocisecurity.capabilities(pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(add_capabilities=["BOGUS"])))
    priv = ocisecurity.capabilities(pb.LinuxContainerSecurityContext(privileged=True))
    assert "CAP_SYS_ADMIN" in priv


def test_seccomp_profiles(tmp_path):
    P = pb.SecurityProfile.ProfileType
    default = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=P.RuntimeDefault))
    assert (prof := ocisecurity.seccomp_profile(default)) is not None and prof["defaultAction"]
    assert ocisecurity.seccomp_profile(pb.LinuxContainerSecurityContext(
        seccomp_profile_path="docker/default"))
    assert ocisecurity.seccomp_profile(pb.LinuxContainerSecurityContext()) is None
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    local = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=P.Localhost, localhost_ref=str(prof)))
    assert ocisecurity.seccomp_profile(local) == {"defaultAction": "SCMP_ACT_ALLOW"}
    with pytest.raises(NotFound):
        ocisecurity.seccomp_profile(pb.LinuxContainerSecurityContext(
            seccomp_profile_path=f"localhost/{tmp_path}/absent.json"))
    with pytest.raises(InvalidArgument, match="unknown seccomp"):
        ocisecurity.seccomp_profile(pb.LinuxContainerSecurityContext(
            seccomp_profile_path="bogus"))


def _allowed(spec: dict) -> set:
    return {n for s in spec["linux"]["seccomp"]["syscalls"] if s["action"] == "SCMP_ACT_ALLOW"
            and not s.get("args") for n in s["names"]}


def test_runtime_default_follows_granted_capabilities():
    """Docker's capability rules: added caps open their syscalls, dropped ones close them."""
    P = pb.SecurityProfile.ProfileType
    rd = pb.SecurityProfile(profile_type=P.RuntimeDefault)
    plain = build(pb.ContainerConfig(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(seccomp=rd))))
    admin = build(pb.ContainerConfig(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(
            seccomp=rd, capabilities=pb.Capability(add_capabilities=["SYS_ADMIN", "SYS_TIME"])))))
    assert not {"sethostname", "mount", "clock_settime"} & _allowed(plain)
    assert {"sethostname", "mount", "clock_settime"} <= _allowed(admin)
    no_chroot = build(pb.ContainerConfig(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(
            seccomp=rd, capabilities=pb.Capability(drop_capabilities=["SYS_CHROOT"])))))
    assert "chroot" in _allowed(plain) and "chroot" not in _allowed(no_chroot)


@pytest.mark.parametrize("field, value", [("cpu_shares", -1), ("memory_limit_in_bytes", -5),
                                          ("oom_score_adj", 5000)])
def test_bad_resources(field, value):
    with pytest.raises(InvalidArgument, match=field):
        ocispec.resources(pb.LinuxContainerResources(**{field: value}))


def test_resources_shape():
    r = ocispec.resources(pb.LinuxContainerResources(cpu_quota=50000, cpu_period=100000,
                                                     memory_limit_in_bytes=64 << 20))
    assert r["cpu"] == {"quota": 50000, "period": 100000}
    assert r["memory"] == {"limit": 64 << 20}


def test_propagating_volume_needs_a_propagating_source(tmp_path):
    """/ is private on these hosts: Bidirectional and HostToContainer refuse it, naming the path."""
    MP = pb.MountPropagation
    for prop in (MP.PROPAGATION_BIDIRECTIONAL, MP.PROPAGATION_HOST_TO_CONTAINER):
        cfg = pb.ContainerConfig(mounts=[pb.Mount(container_path="/v", host_path=str(tmp_path),
                                                  propagation=prop)])
        with pytest.raises(FailedPrecondition, match=f"{tmp_path} is mounted on .*shared"):
            build(cfg)
    spec = build(pb.ContainerConfig(mounts=[pb.Mount(container_path="/v",
                                                     host_path=str(tmp_path))]))
    assert "rootfsPropagation" not in spec["linux"]


def test_bidirectional_volume_keeps_the_root_shared(shared_tmpfs):
    """runc's rule: a Bidirectional volume needs rootfsPropagation rshared to reach the host."""
    spec = build(pb.ContainerConfig(mounts=[pb.Mount(
        container_path="/v", host_path=str(shared_tmpfs),
        propagation=pb.MountPropagation.PROPAGATION_BIDIRECTIONAL)]))
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    assert next(m for m in spec["mounts"] if m["destination"] == "/v")["options"] == [
        "rbind", "rshared"]


def _userns_cfg(host=100000, size=65536, **sec):
    ids = [pb.IDMapping(container_id=0, host_id=host, length=size)]
    ns = pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER, userns_options=pb.UserNamespace(
        mode=pb.NamespaceMode.POD, uids=ids, gids=ids))
    return pb.ContainerConfig(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(namespace_options=ns, **sec)))


def test_user_namespace_spec(tmp_path):
    cfg = _userns_cfg()
    cfg.mounts.append(pb.Mount(container_path="/v", host_path=str(tmp_path)))
    spec = build(cfg)
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert spec["linux"]["gidMappings"] == spec["linux"]["uidMappings"]
    vol = next(m for m in spec["mounts"] if m["destination"] == "/v")
    assert "ridmap" in vol["options"]
    hosts = next(m for m in spec["mounts"] if m["destination"] == "/etc/hosts")
    assert "ridmap" not in hosts["options"]
    assert ocispec.user_namespace(pb.ContainerConfig()) is None


@pytest.mark.parametrize("cfg, message", [
    (_userns_cfg(host=0), "includes host id 0"),
    (_userns_cfg(host=1, size=0), "length 0"),
    (_userns_cfg(privileged=True), "privileged"),
])
def test_user_namespace_refusals(cfg, message):
    with pytest.raises(InvalidArgument, match=message):
        build(cfg)


def test_user_namespace_needs_its_own_pid_namespace():
    cfg = _userns_cfg()
    cfg.linux.security_context.namespace_options.pid = pb.NamespaceMode.NODE
    with pytest.raises(InvalidArgument, match="own pid namespace"):
        build(cfg)
    cfg = _userns_cfg()
    cfg.linux.security_context.namespace_options.userns_options.mode = pb.NamespaceMode.CONTAINER
    with pytest.raises(InvalidArgument, match="not supported"):
        build(cfg)
