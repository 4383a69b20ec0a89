"""CRI metadata parsed once per stored config, not once per record per list call."""

from __future__ import annotations

from engine.store import ContainerRecord, PodRecord
from proto import api_pb2 as pb


class MetadataCache:
    """CRI metadata parsed once per stored config, not once per record per list call."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[bytes, pb.PodSandboxMetadata]] = {}
        self._containers: dict[str, tuple[bytes, pb.ContainerMetadata]] = {}

    def pod(self, rec: PodRecord) -> pb.PodSandboxMetadata:
        hit = self._pods.get(rec.id)
        if hit is None or hit[0] is not rec.config:
            hit = (rec.config, pb.PodSandboxConfig.FromString(rec.config).metadata)
            self._pods[rec.id] = hit
        return hit[1]

    def container(self, rec: ContainerRecord) -> pb.ContainerMetadata:
        hit = self._containers.get(rec.id)
        if hit is None or hit[0] is not rec.config:
            hit = (rec.config, pb.ContainerConfig.FromString(rec.config).metadata)
            self._containers[rec.id] = hit
        return hit[1]

    def forget(self, record_id: str) -> None:
        self._pods.pop(record_id, None)
        self._containers.pop(record_id, None)
