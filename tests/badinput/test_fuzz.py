"""Random but well-formed protobuf requests at a handful of RPCs: berthd must keep answering.

`BERTH_FUZZ_SECONDS` sets the budget (default 15 s, what CI runs); e.g. 600 for a long run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.badinput.env import Env

BUDGET = float(os.environ.get("BERTH_FUZZ_SECONDS", "15"))
TARGETS = ["RunPodSandbox", "CreateContainer", "ContainerStatus", "ListContainers",
           "ExecSync", "ImageStatus", "PodSandboxStatus", "UpdateContainerResources",
           "StopContainer", "ListPodSandbox"]
# Fields that would reach the host: ports, host paths, host namespaces, privileges, pulls
_SCRUB = {"port_mappings", "mounts", "devices", "namespace_options", "privileged",
          "sysctls", "cdi_devices", "log_directory", "cgroup_parent", "log_path", "seccomp",
          "seccomp_profile_path", "localhost_ref", "apparmor", "host_path", "unified"}
# Waits a request may ask for, capped so one example cannot eat the budget
_CAPS = {"ExecSync": "timeout", "StopContainer": "timeout"}
_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "..", "/", "a" * 300, "\x00", "sha256:", "$RUNNING", "$POD", "$IMAGE"])
_INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.sampled_from([0, -1, 1])


def _value(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one field's value, by protobuf type."""
    t = f.type
    if f.message_type is not None:
        return message(f.message_type, depth + 1) if depth < 3 else st.just({})
    if t == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.enum_type is not None:
        return st.sampled_from([v.number for v in f.enum_type.values])
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
        return st.integers(min_value=0, max_value=2**32 - 1)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    return _INTS


def message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts for json_format.ParseDict: any subset of fields, maps and lists kept short."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.name in _SCRUB:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key, val = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            fields[f.name] = st.dictionaries(_value(key, depth), _value(val, depth), max_size=3)
        elif f.is_repeated:
            fields[f.name] = st.lists(_value(f, depth), max_size=3)
        else:
            fields[f.name] = _value(f, depth)
    return st.fixed_dictionaries({}, optional=fields)


def _request(env: Env) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    svc = env.client.pb.DESCRIPTOR.services_by_name["RuntimeService"]
    img = env.client.pb.DESCRIPTOR.services_by_name["ImageService"]
    choices = [st.tuples(st.just(name), message((svc.methods_by_name.get(name)
                                                 or img.methods_by_name[name]).input_type))
               for name in TARGETS]
    return st.one_of(*choices)


@pytest.mark.timeout(int(BUDGET) + 120)
def test_fuzz_survives(env: Env) -> None:
    deadline = time.monotonic() + BUDGET
    codes: dict[str, int] = {}
    internal: list[str] = []  # reported, not failed: bad input should never be INTERNAL
    image_rpcs = {"ImageStatus"}

    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_request(env))
    def one(call: tuple[str, dict[str, Any]]) -> None:
        rpc, req = call
        req = env.fill(req)  # "$RUNNING" strings become a live container id
        if rpc in _CAPS:
            req[_CAPS[rpc]] = min(abs(req.get(_CAPS[rpc], 0)), 2)
        code, details, resp = env.call("image" if rpc in image_rpcs else "runtime", rpc, req)
        codes[code.name] = codes.get(code.name, 0) + 1
        if code == grpc.StatusCode.INTERNAL:
            internal.append(f"{rpc}: {details[:200]}")
        assert code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN), (rpc, req)
        _undo(env, resp)

    while time.monotonic() < deadline:  # hypothesis has no wall-clock budget: short runs
        one()
    assert env.client.version().runtime_name
    assert env.berthd.proc is not None and env.berthd.proc.poll() is None
    print(f"fuzz: {sum(codes.values())} requests in {BUDGET:.0f} s: {codes}")
    print("\n".join(f"fuzz INTERNAL: {line}" for line in sorted(set(internal))))
    env.remove_everything()
    assert env.leftovers() == []


def _undo(env: Env, resp: Any) -> None:
    """Remove what an accepted request created, keeping the setup's own objects."""
    pb, rt = env.client.pb, env.client.runtime
    if isinstance(resp, pb.RunPodSandboxResponse) and resp.pod_sandbox_id:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id),
                          timeout=60)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id),
                            timeout=60)
    if isinstance(resp, pb.CreateContainerResponse) and resp.container_id:
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=resp.container_id), timeout=60)
