"""Checks that the committed CRI runtime.v1 stubs are fresh and wire-compatible."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor as _d

from proto import api_pb2, api_pb2_grpc, generate

FD = _d.FieldDescriptor
S = True  # server-streaming
U = False  # unary

# (method, request, response, server_streaming), in upstream declaration order.
RUNTIME_METHODS = [
    ("Version", "VersionRequest", "VersionResponse", U),
    ("RunPodSandbox", "RunPodSandboxRequest", "RunPodSandboxResponse", U),
    ("StopPodSandbox", "StopPodSandboxRequest", "StopPodSandboxResponse", U),
    ("RemovePodSandbox", "RemovePodSandboxRequest", "RemovePodSandboxResponse", U),
    ("PodSandboxStatus", "PodSandboxStatusRequest", "PodSandboxStatusResponse", U),
    ("ListPodSandbox", "ListPodSandboxRequest", "ListPodSandboxResponse", U),
    ("StreamPodSandboxes", "StreamPodSandboxesRequest", "StreamPodSandboxesResponse", S),
    ("CreateContainer", "CreateContainerRequest", "CreateContainerResponse", U),
    ("StartContainer", "StartContainerRequest", "StartContainerResponse", U),
    ("StopContainer", "StopContainerRequest", "StopContainerResponse", U),
    ("RemoveContainer", "RemoveContainerRequest", "RemoveContainerResponse", U),
    ("ListContainers", "ListContainersRequest", "ListContainersResponse", U),
    ("StreamContainers", "StreamContainersRequest", "StreamContainersResponse", S),
    ("ContainerStatus", "ContainerStatusRequest", "ContainerStatusResponse", U),
    (
        "UpdateContainerResources",
        "UpdateContainerResourcesRequest",
        "UpdateContainerResourcesResponse",
        U,
    ),
    ("ReopenContainerLog", "ReopenContainerLogRequest", "ReopenContainerLogResponse", U),
    ("ExecSync", "ExecSyncRequest", "ExecSyncResponse", U),
    ("Exec", "ExecRequest", "ExecResponse", U),
    ("Attach", "AttachRequest", "AttachResponse", U),
    ("PortForward", "PortForwardRequest", "PortForwardResponse", U),
    ("ContainerStats", "ContainerStatsRequest", "ContainerStatsResponse", U),
    ("ListContainerStats", "ListContainerStatsRequest", "ListContainerStatsResponse", U),
    ("StreamContainerStats", "StreamContainerStatsRequest", "StreamContainerStatsResponse", S),
    ("PodSandboxStats", "PodSandboxStatsRequest", "PodSandboxStatsResponse", U),
    ("ListPodSandboxStats", "ListPodSandboxStatsRequest", "ListPodSandboxStatsResponse", U),
    (
        "StreamPodSandboxStats",
        "StreamPodSandboxStatsRequest",
        "StreamPodSandboxStatsResponse",
        S,
    ),
    ("UpdateRuntimeConfig", "UpdateRuntimeConfigRequest", "UpdateRuntimeConfigResponse", U),
    ("Status", "StatusRequest", "StatusResponse", U),
    ("CheckpointContainer", "CheckpointContainerRequest", "CheckpointContainerResponse", U),
    ("GetContainerEvents", "GetEventsRequest", "ContainerEventResponse", S),
    (
        "ListMetricDescriptors",
        "ListMetricDescriptorsRequest",
        "ListMetricDescriptorsResponse",
        U,
    ),
    (
        "ListPodSandboxMetrics",
        "ListPodSandboxMetricsRequest",
        "ListPodSandboxMetricsResponse",
        U,
    ),
    (
        "StreamPodSandboxMetrics",
        "StreamPodSandboxMetricsRequest",
        "StreamPodSandboxMetricsResponse",
        S,
    ),
    ("RuntimeConfig", "RuntimeConfigRequest", "RuntimeConfigResponse", U),
    (
        "UpdatePodSandboxResources",
        "UpdatePodSandboxResourcesRequest",
        "UpdatePodSandboxResourcesResponse",
        U,
    ),
]

IMAGE_METHODS = [
    ("ListImages", "ListImagesRequest", "ListImagesResponse", U),
    ("StreamImages", "StreamImagesRequest", "StreamImagesResponse", S),
    ("ImageStatus", "ImageStatusRequest", "ImageStatusResponse", U),
    ("PullImage", "PullImageRequest", "PullImageResponse", U),
    ("RemoveImage", "RemoveImageRequest", "RemoveImageResponse", U),
    ("ImageFsInfo", "ImageFsInfoRequest", "ImageFsInfoResponse", U),
]

REP, ONE = True, False  # repeated (incl. maps) or singular
# (message, field, number, type, repeated, message/enum type or None) for fields
# that were added or moved across releases, where a slip would break the wire.
FIELDS = [
    ("ImageFsInfoResponse", "image_filesystems", 1, FD.TYPE_MESSAGE, REP, "FilesystemUsage"),
    ("ImageFsInfoResponse", "container_filesystems", 2, FD.TYPE_MESSAGE, REP, "FilesystemUsage"),
    ("Mount", "uidMappings", 6, FD.TYPE_MESSAGE, REP, "IDMapping"),
    ("Mount", "gidMappings", 7, FD.TYPE_MESSAGE, REP, "IDMapping"),
    ("Mount", "recursive_read_only", 8, FD.TYPE_BOOL, ONE, None),
    ("Mount", "image", 9, FD.TYPE_MESSAGE, ONE, "ImageSpec"),
    ("Mount", "image_sub_path", 10, FD.TYPE_STRING, ONE, None),
    ("ImageSpec", "user_specified_image", 18, FD.TYPE_STRING, ONE, None),
    ("ImageSpec", "runtime_handler", 19, FD.TYPE_STRING, ONE, None),
    ("ImageSpec", "image_ref", 20, FD.TYPE_STRING, ONE, None),
    ("ContainerConfig", "CDI_devices", 17, FD.TYPE_MESSAGE, REP, "CDIDevice"),
    ("ContainerConfig", "stop_signal", 18, FD.TYPE_ENUM, ONE, "Signal"),
    ("ContainerStatus", "resources", 16, FD.TYPE_MESSAGE, ONE, "ContainerResources"),
    ("ContainerStatus", "image_id", 17, FD.TYPE_STRING, ONE, None),
    ("ContainerStatus", "user", 18, FD.TYPE_MESSAGE, ONE, "ContainerUser"),
    ("ContainerStatus", "stop_signal", 19, FD.TYPE_ENUM, ONE, "Signal"),
    ("Container", "image_id", 10, FD.TYPE_STRING, ONE, None),
    (
        "LinuxContainerSecurityContext",
        "supplemental_groups_policy",
        17,
        FD.TYPE_ENUM,
        ONE,
        "SupplementalGroupsPolicy",
    ),
    ("LinuxContainerSecurityContext", "run_as_group", 12, FD.TYPE_MESSAGE, ONE, "Int64Value"),
    ("LinuxContainerSecurityContext", "apparmor_profile", 9, FD.TYPE_STRING, ONE, None),
    ("LinuxContainerSecurityContext", "seccomp", 15, FD.TYPE_MESSAGE, ONE, "SecurityProfile"),
    (
        "LinuxSandboxSecurityContext",
        "supplemental_groups_policy",
        11,
        FD.TYPE_ENUM,
        ONE,
        "SupplementalGroupsPolicy",
    ),
    ("LinuxSandboxSecurityContext", "run_as_group", 8, FD.TYPE_MESSAGE, ONE, "Int64Value"),
    ("LinuxPodSandboxConfig", "overhead", 4, FD.TYPE_MESSAGE, ONE, "LinuxContainerResources"),
    ("LinuxPodSandboxConfig", "resources", 5, FD.TYPE_MESSAGE, ONE, "LinuxContainerResources"),
    ("PodSandboxStatus", "runtime_handler", 9, FD.TYPE_STRING, ONE, None),
    ("PodSandboxStatusResponse", "containers_statuses", 3, FD.TYPE_MESSAGE, REP, "ContainerStatus"),
    ("PodSandboxStatusResponse", "timestamp", 4, FD.TYPE_INT64, ONE, None),
    ("NamespaceOption", "userns_options", 5, FD.TYPE_MESSAGE, ONE, "UserNamespace"),
    ("StatusResponse", "runtime_handlers", 3, FD.TYPE_MESSAGE, REP, "RuntimeHandler"),
    ("StatusResponse", "features", 4, FD.TYPE_MESSAGE, ONE, "RuntimeFeatures"),
    ("RuntimeHandlerFeatures", "recursive_read_only_mounts", 1, FD.TYPE_BOOL, ONE, None),
    ("RuntimeHandlerFeatures", "user_namespaces", 2, FD.TYPE_BOOL, ONE, None),
    ("RuntimeFeatures", "supplemental_groups_policy", 1, FD.TYPE_BOOL, ONE, None),
    ("RuntimeFeatures", "user_namespaces_host_network", 2, FD.TYPE_BOOL, ONE, None),
    ("ContainerStats", "swap", 5, FD.TYPE_MESSAGE, ONE, "SwapUsage"),
    ("ContainerStats", "io", 6, FD.TYPE_MESSAGE, ONE, "IoUsage"),
    ("MemoryUsage", "psi", 8, FD.TYPE_MESSAGE, ONE, "PsiStats"),
    ("PsiStats", "Full", 1, FD.TYPE_MESSAGE, ONE, "PsiData"),
    ("PsiData", "Avg300", 4, FD.TYPE_DOUBLE, ONE, None),
    ("Image", "pinned", 8, FD.TYPE_BOOL, ONE, None),
    ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10, FD.TYPE_INT64, ONE, None),
    ("StreamPodSandboxesResponse", "pod_sandboxes", 1, FD.TYPE_MESSAGE, REP, "PodSandbox"),
    ("StreamContainersResponse", "containers", 1, FD.TYPE_MESSAGE, REP, "Container"),
    ("StreamContainerStatsResponse", "container_stats", 1, FD.TYPE_MESSAGE, REP, "ContainerStats"),
    (
        "StreamPodSandboxStatsResponse",
        "pod_sandbox_stats",
        1,
        FD.TYPE_MESSAGE,
        REP,
        "PodSandboxStats",
    ),
    (
        "StreamPodSandboxMetricsResponse",
        "pod_sandbox_metrics",
        1,
        FD.TYPE_MESSAGE,
        REP,
        "PodSandboxMetrics",
    ),
    ("StreamImagesResponse", "images", 1, FD.TYPE_MESSAGE, REP, "Image"),
    ("StreamPodSandboxesRequest", "filter", 1, FD.TYPE_MESSAGE, ONE, "PodSandboxFilter"),
    ("StreamContainersRequest", "filter", 1, FD.TYPE_MESSAGE, ONE, "ContainerFilter"),
    ("StreamContainerStatsRequest", "filter", 1, FD.TYPE_MESSAGE, ONE, "ContainerStatsFilter"),
    ("StreamPodSandboxStatsRequest", "filter", 1, FD.TYPE_MESSAGE, ONE, "PodSandboxStatsFilter"),
    ("StreamImagesRequest", "filter", 1, FD.TYPE_MESSAGE, ONE, "ImageFilter"),
    (
        "UpdatePodSandboxResourcesRequest",
        "resources",
        3,
        FD.TYPE_MESSAGE,
        ONE,
        "LinuxContainerResources",
    ),
    ("RuntimeConfigResponse", "linux", 1, FD.TYPE_MESSAGE, ONE, "LinuxRuntimeConfiguration"),
    ("LinuxRuntimeConfiguration", "cgroup_driver", 1, FD.TYPE_ENUM, ONE, "CgroupDriver"),
]


def _methods(service: str) -> list[tuple[str, str, str, bool]]:
    svc = api_pb2.DESCRIPTOR.services_by_name[service]
    for m in svc.methods:
        assert not m.client_streaming, m.full_name
    return [
        (m.name, m.input_type.name, m.output_type.name, m.server_streaming) for m in svc.methods
    ]


@pytest.mark.timeout(60)
def test_stubs_are_fresh() -> None:
    assert generate.stale_outputs() == []


def test_file_identity() -> None:
    fd = api_pb2.DESCRIPTOR
    assert fd.package == "runtime.v1"
    assert fd.GetOptions().go_package == "k8s.io/cri-api/pkg/apis/runtime/v1"
    assert list(fd.dependencies) == []
    assert set(fd.services_by_name) == {"RuntimeService", "ImageService"}


def test_runtime_service_methods() -> None:
    assert _methods("RuntimeService") == RUNTIME_METHODS


def test_image_service_methods() -> None:
    assert _methods("ImageService") == IMAGE_METHODS


def test_grpc_stubs_expose_every_method() -> None:
    for stub, methods in (
        (api_pb2_grpc.RuntimeServiceStub, RUNTIME_METHODS),
        (api_pb2_grpc.ImageServiceStub, IMAGE_METHODS),
    ):
        servicer = stub.__name__.replace("Stub", "Servicer")
        for name, *_ in methods:
            assert hasattr(getattr(api_pb2_grpc, servicer), name), (servicer, name)


@pytest.mark.parametrize(("msg", "field", "number", "ftype", "repeated", "type_name"), FIELDS)
def test_field(
    msg: str, field: str, number: int, ftype: int, repeated: bool, type_name: str | None
) -> None:
    f = api_pb2.DESCRIPTOR.message_types_by_name[msg].fields_by_name[field]
    assert (f.number, f.type, f.is_repeated) == (number, ftype, repeated)
    assert f.containing_oneof is None
    sub = f.message_type or f.enum_type
    assert (sub.name if sub else None) == type_name


def test_empty_requests_have_no_fields() -> None:
    for name in (
        "StreamPodSandboxMetricsRequest",
        "ListPodSandboxMetricsRequest",
        "GetEventsRequest",
        "RuntimeConfigRequest",
        "ImageFsInfoRequest",
    ):
        assert api_pb2.DESCRIPTOR.message_types_by_name[name].fields == [], name


def test_enum_values() -> None:
    enums = api_pb2.DESCRIPTOR.enum_types_by_name
    assert enums["SupplementalGroupsPolicy"].values_by_name["Strict"].number == 1
    assert enums["CgroupDriver"].values_by_name["CGROUPFS"].number == 1
    assert enums["ContainerState"].values_by_name["CONTAINER_UNKNOWN"].number == 3
    assert enums["NamespaceMode"].values_by_name["TARGET"].number == 3
    signal = enums["Signal"]
    assert len(signal.values) == 66
    assert signal.values_by_name["SIGTERM"].number == 23
    assert signal.values_by_name["SIGKILL"].number == 13
    assert signal.values_by_name["SIGRTMAX"].number == 65


def test_round_trip_known_bytes() -> None:
    """Hand-encoded bytes pin the wire format independent of the descriptor."""
    req = api_pb2.ExecRequest(container_id="c", cmd=["sh"], tty=True, stderr=True)
    assert req.SerializeToString() == b"\n\x01c\x12\x02sh\x18\x010\x01"
    status = api_pb2.ContainerStatus(stop_signal=api_pb2.SIGTERM)
    assert status.SerializeToString() == b"\x98\x01\x17"
    mount = api_pb2.Mount(image=api_pb2.ImageSpec(image="i"), image_sub_path="p")
    assert mount.SerializeToString() == b"J\x03\n\x01iR\x01p"


@pytest.mark.timeout(60)
def test_check_mode_detects_stale_stub(tmp_path, monkeypatch) -> None:
    (tmp_path / "proto").mkdir()
    for rel in (generate.PROTO, *generate.OUTPUTS):
        (tmp_path / rel).write_bytes((generate.REPO_ROOT / rel).read_bytes())
    monkeypatch.setattr(generate, "REPO_ROOT", tmp_path)
    assert generate.main(["--check"]) == 0
    (tmp_path / "proto/api_pb2.pyi").write_text("# edited by hand\n")
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
