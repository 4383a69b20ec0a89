"""The bad-input corpus: one malformed request per row, with the status and field it must name.

Requests are protobuf-JSON dicts (field names as in api.proto). Strings starting with `$` are
filled in at run time from the live objects the test sets up (`Env.vars`): `$POD` a ready pod,
`$STOPPED_POD`, `$CREATED`/`$RUNNING`/`$EXITED` containers, `$POD_AMBIG`/`$CTR_AMBIG` prefixes
shared by two ids, `$IMAGE` a pulled ref, `$REGISTRY` the loopback registry, `$TMP` a host dir.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

NUL = "a\x00b"
HUGE = "x" * 70_000
UNKNOWN_ID = "f" * 64


@dataclass(frozen=True)
class Case:
    """rpc, request, the exact status code, and words the message must contain (any case)."""

    rpc: str
    request: dict[str, Any]
    code: str
    mentions: tuple[str, ...] = ()
    service: str = "runtime"
    why: str = ""
    pending: str = ""  # non-empty: Berth may still answer UNIMPLEMENTED here (xfail)
    tags: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.rpc}-{self.why or self.code}".replace(" ", "_")


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `patch` into a copy of `base`; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def pod_config(**patch: Any) -> dict[str, Any]:
    """A valid RunPodSandboxRequest with `patch` merged into its config."""
    cfg = {"metadata": {"name": "bad-pod", "uid": "$UID", "namespace": "badinput"},
           "log_directory": "$TMP/logs", "linux": {"cgroup_parent": "$CGROUP_PARENT"}}
    return {"config": merge(cfg, patch)}


def ctr(pod: str = "$POD", **patch: Any) -> dict[str, Any]:
    """A valid CreateContainerRequest in `pod` with `patch` merged into its config."""
    cfg = {"metadata": {"name": "$UNIQUE"}, "image": {"image": "$IMAGE"},
           "command": ["sleep", "60"], "log_path": "c.log"}
    return {"pod_sandbox_id": pod, "config": merge(cfg, patch), "sandbox_config": "$POD_CONFIG"}


def sec(**fields: Any) -> dict[str, Any]:
    return {"linux": {"security_context": fields}}


def res(**fields: Any) -> dict[str, Any]:
    return {"linux": {"resources": fields}}


INV, NF, FP, AE, OK = "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "ALREADY_EXISTS", "OK"
STATS = "stats RPCs are not written yet"


def _id_cases(rpc: str, key: str, kind: str, unknown: str = NF, pending: str = "",
              extra: dict[str, Any] | None = None) -> list[Case]:
    """The id checks every by-id RPC gets: empty, unknown, garbage and ambiguous prefixes."""
    ambig = "$POD_AMBIG" if kind == "pod" else "$CTR_AMBIG"
    base = extra or {}
    return [
        Case(rpc, {**base, key: ""}, INV, (key.split("_")[0], "required"), why="empty id",
             pending=pending),
        Case(rpc, {**base, key: UNKNOWN_ID}, unknown,
             () if unknown == OK else (UNKNOWN_ID[:12],), why="unknown id", pending=pending),
        Case(rpc, {**base, key: "zz-not-hex"}, unknown, () if unknown == OK else ("zz-not-hex",),
             why="garbage id", pending=pending),
        Case(rpc, {**base, key: ambig}, INV, ("ambiguous",), why="ambiguous prefix",
             pending=pending),
        Case(rpc, {**base, key: NUL}, unknown, (), why="NUL in id", pending=pending),
    ]


POD_CASES = [
    Case("RunPodSandbox", {}, INV, ("metadata",), why="no config"),
    Case("RunPodSandbox", pod_config(metadata=None), INV, ("metadata",), why="no metadata"),
    Case("RunPodSandbox", pod_config(metadata={"name": ""}), INV, ("metadata.name",),
         why="empty name"),
    Case("RunPodSandbox", pod_config(metadata={"uid": ""}), INV, ("uid",), why="empty uid"),
    Case("RunPodSandbox", pod_config(metadata={"namespace": ""}), INV, ("namespace",),
         why="empty namespace"),
    Case("RunPodSandbox", pod_config(metadata={"name": NUL}), INV, ("name",), why="NUL in name"),
    Case("RunPodSandbox", pod_config(metadata={"name": HUGE}), INV, ("name",),
         why="oversized name"),
    # printable unicode is only a name: accepted (and removed again by the test)
    Case("RunPodSandbox", pod_config(metadata={"name": "pód-名前-\U0001f433"},
                                     labels={"ключ": "значение"}), OK, why="unicode name"),
    Case("RunPodSandbox", pod_config(metadata={"name": "$POD_NAME", "uid": "$POD_UID",
                                               "namespace": "badinput"}),
         AE, ("$POD",), why="duplicate name names holder"),
    Case("RunPodSandbox", pod_config(hostname="bad_host!"), INV, ("hostname",),
         why="bad hostname"),
    Case("RunPodSandbox", pod_config(hostname=HUGE), INV, ("hostname",), why="huge hostname"),
    Case("RunPodSandbox", pod_config(hostname="not-the-node-21", linux={
        "security_context": {"namespace_options": {"network": "NODE"}}}), INV,
        ("private UTS namespace",), why="own hostname without own UTS namespace"),
    Case("RunPodSandbox", pod_config(log_directory="relative/logs"), INV, ("log_directory",),
         why="relative log dir"),
    Case("RunPodSandbox", pod_config(log_directory=f"/tmp/{NUL}"), INV, ("log_directory",),
         why="NUL in log dir"),
    Case("RunPodSandbox", pod_config(linux={"cgroup_parent": "../../escape"}), INV,
         ("cgroup_parent",), why="cgroup parent escape"),
    Case("RunPodSandbox", pod_config(port_mappings=[{"container_port": 0, "host_port": 80}]),
         INV, ("container_port",), why="port 0"),
    Case("RunPodSandbox", pod_config(port_mappings=[{"container_port": 80,
                                                     "host_port": 70000}]),
         INV, ("host_port",), why="host port out of range"),
    Case("RunPodSandbox", pod_config(port_mappings=[{"container_port": -5}]), INV,
         ("container_port",), why="negative port"),
    Case("RunPodSandbox", pod_config(port_mappings=[{"container_port": 80, "protocol": 9}]),
         INV, ("protocol",), why="unknown protocol"),
    Case("RunPodSandbox", pod_config(port_mappings=[{"container_port": 80, "host_port": 8080,
                                                     "host_ip": "not-an-ip"}]),
         INV, ("host_ip",), why="bad host ip"),
    Case("RunPodSandbox", pod_config(dns_config={"servers": ["999.1.1.1"]}), INV,
         ("dns_config",), why="bad dns server"),
    Case("RunPodSandbox", pod_config(linux={"sysctls": {"kernel.panic": "1"}}), INV,
         ("sysctls", "kernel.panic"), why="node-wide sysctl"),
    Case("RunPodSandbox", pod_config(linux={"sysctls": {"kernel.shm_rmid_forced": "1\nx"}}),
         INV, ("sysctls",), why="sysctl value injection"),
    Case("RunPodSandbox", pod_config(linux={"sysctls": {"../../vm/overcommit_memory": "1"}}),
         INV, ("sysctls",), why="sysctl path traversal"),
    Case("RunPodSandbox", {**pod_config(), "runtime_handler": "nope"}, NF,
         ("runtime handler", "nope"), why="unknown handler"),
    *_id_cases("StopPodSandbox", "pod_sandbox_id", "pod"),
    *_id_cases("RemovePodSandbox", "pod_sandbox_id", "pod", unknown=OK),
    *_id_cases("PodSandboxStatus", "pod_sandbox_id", "pod"),
    Case("ListPodSandbox", {"filter": {"id": UNKNOWN_ID, "state": {"state": 77}}}, OK,
         why="filter matches nothing"),
    Case("ListPodSandbox", {"filter": {"label_selector": {NUL: HUGE}}}, OK, why="odd selector"),
    Case("StreamPodSandboxes", {"filter": {"id": "zz"}}, OK, why="filter matches nothing"),
    *_id_cases("UpdatePodSandboxResources", "pod_sandbox_id", "pod",
               pending="UpdatePodSandboxResources is new in CRI 1.33"),
]

CONTAINER_CASES = [
    Case("CreateContainer", {"config": ctr()["config"]}, INV, ("pod", "required"),
         why="empty pod id"),
    Case("CreateContainer", ctr(pod=UNKNOWN_ID), NF, (UNKNOWN_ID[:12],), why="unknown pod"),
    Case("CreateContainer", ctr(pod="$POD_AMBIG"), INV, ("ambiguous",), why="ambiguous pod"),
    Case("CreateContainer", ctr(pod="$STOPPED_POD"), FP, ("$STOPPED_POD", "ready"),
         why="pod not ready"),
    Case("CreateContainer", {"pod_sandbox_id": "$POD"}, INV, ("metadata",), why="no config"),
    Case("CreateContainer", ctr(metadata=None), INV, ("metadata",), why="no metadata"),
    Case("CreateContainer", ctr(metadata={"name": ""}), INV, ("metadata.name",),
         why="empty name"),
    Case("CreateContainer", ctr(metadata={"name": NUL}), INV, ("name",), why="NUL in name"),
    Case("CreateContainer", ctr(metadata={"name": HUGE}), INV, ("name",), why="oversized name"),
    Case("CreateContainer", ctr(metadata={"name": "c-\u202eevil-\U0001f433"}), OK,
         why="unicode name"),
    Case("CreateContainer", ctr(metadata={"name": "$CREATED_NAME"}), AE, ("$CREATED",),
         why="duplicate name names holder"),
    Case("CreateContainer", ctr(image=None), INV, ("image",), why="no image"),
    Case("CreateContainer", ctr(image={"image": "$REGISTRY/no/such:1"}), NF, ("image",),
         why="image not pulled"),
    Case("CreateContainer", ctr(image={"image": "Bad::Ref@@"}), INV, ("image",),
         why="bad image ref"),
    Case("CreateContainer", ctr(log_path="/abs/c.log"), INV, ("log_path",),
         why="absolute log path"),
    Case("CreateContainer", ctr(log_path="../../escape.log"), INV, ("log_path",),
         why="log path escapes log dir"),
    Case("CreateContainer", ctr(mounts=[{"container_path": "/m", "host_path": "rel/dir"}]),
         INV, ("host_path",), why="relative host path"),
    Case("CreateContainer", ctr(mounts=[{"container_path": "/m",
                                         "host_path": "/nonexistent/berth-bad"}]),
         NF, ("host path", "/nonexistent/berth-bad"), why="missing host path"),
    Case("CreateContainer", ctr(mounts=[{"container_path": "rel", "host_path": "$TMP"}]),
         INV, ("container_path",), why="relative container path"),
    Case("CreateContainer", ctr(mounts=[{"container_path": "/m", "host_path": "$TMP"},
                                        {"container_path": "/m/", "host_path": "$TMP"}]),
         INV, ("/m",), why="mount target twice"),
    Case("CreateContainer", ctr(devices=[{"container_path": "/dev/x",
                                          "host_path": "/dev/berth-no-such"}]),
         NF, ("/dev/berth-no-such",), why="missing device"),
    Case("CreateContainer", ctr(**res(memory_limit_in_bytes=-1)), INV, ("memory",),
         why="negative memory"),
    Case("CreateContainer", ctr(**res(cpu_shares=-2)), INV, ("cpu_shares",),
         why="negative cpu shares"),
    Case("CreateContainer", ctr(**res(cpu_quota=-7)), INV, ("cpu_quota",),
         why="negative cpu quota"),
    Case("CreateContainer", ctr(**res(cpu_period=-1)), INV, ("cpu_period",),
         why="negative cpu period"),
    Case("CreateContainer", ctr(**res(oom_score_adj=5000)), INV, ("oom_score_adj",),
         why="oom score out of range"),
    Case("CreateContainer", ctr(**res(cpu_period=5)), INV, ("cpu_period",),
         why="cpu period below kernel minimum"),
    Case("CreateContainer", ctr(**res(cpuset_cpus="zero-two")), INV, ("cpuset_cpus",),
         why="bad cpuset"),
    Case("CreateContainer", ctr(**sec(seccomp_profile_path="bogus/profile")), INV,
         ("seccomp",), why="unknown seccomp profile"),
    Case("CreateContainer", ctr(**sec(seccomp={"profile_type": "Localhost",
                                               "localhost_ref": "$TMP/none.json"})),
         NF, ("seccomp",), why="missing seccomp file"),
    Case("CreateContainer", ctr(**sec(seccomp={"profile_type": "Localhost",
                                               "localhost_ref": "rel.json"})),
         INV, ("seccomp",), why="relative seccomp file"),
    Case("CreateContainer", ctr(**sec(seccomp={"profile_type": "Localhost",
                                               "localhost_ref": "$TMP/bad.json"})),
         INV, ("seccomp",), why="seccomp not json"),
    Case("CreateContainer", ctr(**sec(capabilities={"add_capabilities": ["CAP_BOGUS"]})),
         INV, ("capability", "CAP_BOGUS"), why="unknown capability"),
    Case("CreateContainer", ctr(**sec(run_as_user={"value": -1})), INV, ("run_as_user",),
         why="negative uid"),
    Case("CreateContainer", ctr(**sec(run_as_group={"value": 5})), INV, ("run_as_group",),
         why="group without user"),
    Case("CreateContainer", ctr(**sec(run_as_username="no-such-user")), INV,
         ("no-such-user",), why="unknown user name"),
    Case("CreateContainer", ctr(**sec(supplemental_groups=[-1])), INV, ("gid",),
         why="negative supplemental group"),
    Case("CreateContainer", ctr(**sec(apparmor={"profile_type": "Localhost",
                                                "localhost_ref": "x"})),
         INV, ("apparmor",), why="apparmor on a node without it"),
    Case("CreateContainer", ctr(envs=[{"key": "", "value": "v"}]), INV, ("envs",),
         why="empty env key"),
    Case("CreateContainer", ctr(working_dir="relative"), INV, ("working_dir",),
         why="relative working dir"),
    *_id_cases("StartContainer", "container_id", "ctr"),
    Case("StartContainer", {"container_id": "$RUNNING"}, FP, ("$RUNNING",), why="running"),
    Case("StartContainer", {"container_id": "$EXITED"}, FP, ("$EXITED",), why="exited"),
    *_id_cases("StopContainer", "container_id", "ctr"),
    Case("StopContainer", {"container_id": "$RUNNING", "timeout": -3}, INV, ("timeout",),
         why="negative timeout"),
    *_id_cases("RemoveContainer", "container_id", "ctr", unknown=OK),
    *_id_cases("ContainerStatus", "container_id", "ctr"),
    Case("ListContainers", {"filter": {"pod_sandbox_id": UNKNOWN_ID, "state": {"state": 9}}},
         OK, why="filter matches nothing"),
    Case("StreamContainers", {"filter": {"id": NUL}}, OK, why="filter matches nothing"),
    *_id_cases("UpdateContainerResources", "container_id", "ctr",
               extra={"linux": {"memory_limit_in_bytes": 64 << 20}}),
    Case("UpdateContainerResources", {"container_id": "$RUNNING"}, INV, ("linux",),
         why="no resources"),
    Case("UpdateContainerResources", {"container_id": "$RUNNING",
                                      "linux": {"memory_limit_in_bytes": -9}},
         INV, ("memory",), why="negative memory"),
    Case("UpdateContainerResources", {"container_id": "$RUNNING",
                                      "linux": {"cpu_period": 10, "cpu_quota": 5}},
         INV, ("cpu_period",), why="cpu period below kernel minimum"),
    Case("UpdateContainerResources", {"container_id": "$RUNNING",
                                      "linux": {"cpuset_mems": "0,,1"}},
         INV, ("cpuset_mems",), why="bad cpuset"),
    # like containerd: an exited container's recorded resources change, no error
    Case("UpdateContainerResources", {"container_id": "$EXITED",
                                      "linux": {"cpu_shares": 512}},
         OK, why="exited"),
    *_id_cases("ReopenContainerLog", "container_id", "ctr"),
    Case("ReopenContainerLog", {"container_id": "$CREATED"}, FP, ("$CREATED",),
         why="not running"),
    *_id_cases("ExecSync", "container_id", "ctr", extra={"cmd": ["true"]}),
    Case("ExecSync", {"container_id": "$RUNNING"}, INV, ("cmd",), why="empty cmd"),
    Case("ExecSync", {"container_id": "$RUNNING", "cmd": ["true"], "timeout": -1}, INV,
         ("timeout",), why="negative timeout"),
    Case("ExecSync", {"container_id": "$EXITED", "cmd": ["true"]}, FP, ("$EXITED",),
         why="exited"),
    Case("ExecSync", {"container_id": "$CREATED", "cmd": ["true"]}, FP, ("$CREATED",),
         why="not started"),
    *_id_cases("Exec", "container_id", "ctr", extra={"cmd": ["true"], "stdout": True}),
    Case("Exec", {"container_id": "$RUNNING", "stdout": True}, INV, ("cmd",), why="empty cmd"),
    Case("Exec", {"container_id": "$RUNNING", "cmd": ["true"]}, INV,
         ("stdin", "stdout", "stderr"), why="no streams"),
    Case("Exec", {"container_id": "$RUNNING", "cmd": ["sh"], "tty": True, "stdout": True,
                  "stderr": True}, INV, ("tty", "stderr"), why="tty with stderr"),
    Case("Exec", {"container_id": "$EXITED", "cmd": ["true"], "stdout": True}, FP,
         ("$EXITED",), why="exited"),
    *_id_cases("Attach", "container_id", "ctr", extra={"stdout": True}),
    Case("Attach", {"container_id": "$RUNNING"}, INV, ("stdin", "stdout", "stderr"),
         why="no streams"),
    *_id_cases("PortForward", "pod_sandbox_id", "pod", extra={"port": [80]}),
    Case("PortForward", {"pod_sandbox_id": "$POD", "port": [70000]}, INV, ("port",),
         why="port out of range"),
    Case("PortForward", {"pod_sandbox_id": "$STOPPED_POD", "port": [80]}, FP,
         ("$STOPPED_POD",), why="stopped pod"),
    *_id_cases("ContainerStats", "container_id", "ctr", pending=STATS),
    *_id_cases("PodSandboxStats", "pod_sandbox_id", "pod", pending=STATS),
    Case("ListContainerStats", {"filter": {"id": UNKNOWN_ID}}, OK, why="filter", pending=STATS),
    Case("ListPodSandboxStats", {"filter": {"id": UNKNOWN_ID}}, OK, why="filter",
         pending=STATS),
    Case("StreamContainerStats", {"filter": {"id": UNKNOWN_ID}}, OK, why="filter",
         pending=STATS),
    Case("StreamPodSandboxStats", {"filter": {"id": UNKNOWN_ID}}, OK, why="filter",
         pending=STATS),
    Case("ListMetricDescriptors", {}, OK, pending=STATS),
    Case("ListPodSandboxMetrics", {}, OK, pending=STATS),
    Case("StreamPodSandboxMetrics", {}, OK, pending=STATS),
    Case("CheckpointContainer", {"container_id": "$RUNNING", "location": "$TMP/ck.tar"},
         "UNIMPLEMENTED", ("checkpoint",), why="not supported"),
]

INFO_CASES = [
    Case("Version", {"version": HUGE}, OK, why="odd version"),
    Case("Status", {"verbose": True}, OK),
    Case("RuntimeConfig", {}, OK),
    Case("UpdateRuntimeConfig", {"runtime_config": {"network_config": {"pod_cidr": "nonsense"}}},
         INV, ("pod_cidr",), why="bad cidr"),
    Case("UpdateRuntimeConfig", {}, OK, why="empty"),
]

IMAGE_CASES = [
    Case("ListImages", {"filter": {"image": {"image": "Bad::Ref@@"}}}, OK, service="image",
         why="filter matches nothing"),
    Case("StreamImages", {"filter": {"image": {"image": NUL}}}, OK, service="image",
         why="filter matches nothing"),
    Case("ImageStatus", {}, INV, ("image",), service="image", why="no image"),
    Case("ImageStatus", {"image": {"image": "Bad::Ref@@"}}, INV, ("Bad::Ref@@",),
         service="image", why="bad ref"),
    Case("ImageStatus", {"image": {"image": "$REGISTRY/absent:1"}}, OK, service="image",
         why="absent image is an empty answer"),
    Case("PullImage", {}, INV, ("image",), service="image", why="no image"),
    Case("PullImage", {"image": {"image": "Bad::Ref@@"}}, INV, ("Bad::Ref@@",),
         service="image", why="bad ref"),
    Case("PullImage", {"image": {"image": "$REGISTRY/e2e/busybox@sha256:xyz"}}, INV,
         ("sha256:xyz",), service="image", why="bad digest"),
    Case("PullImage", {"image": {"image": NUL}}, INV, ("image",), service="image",
         why="NUL ref"),
    Case("PullImage", {"image": {"image": "$REGISTRY/e2e/" + "x" * 300 + ":1"}}, INV,
         ("image",), service="image", why="oversized ref"),
    Case("PullImage", {"image": {"image": "$REGISTRY/no/such:1"}}, NF, ("no/such",),
         service="image", why="unknown repo"),
    Case("RemoveImage", {}, INV, ("image",), service="image", why="no image"),
    Case("RemoveImage", {"image": {"image": "Bad::Ref@@"}}, INV, ("Bad::Ref@@",),
         service="image", why="bad ref"),
    Case("RemoveImage", {"image": {"image": "$REGISTRY/absent:1"}}, OK, service="image",
         why="absent image is idempotent"),
    Case("RemoveImage", {"image": {"image": "$IMAGE"}}, FP, ("use",), service="image",
         why="image in use"),
    Case("ImageFsInfo", {}, OK, service="image"),
]

CASES: list[Case] = POD_CASES + CONTAINER_CASES + INFO_CASES + IMAGE_CASES
