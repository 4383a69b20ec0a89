"""What every CRI servicer shares: the engine's context plus CRI's own caches and streaming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cri.statecache import MetadataCache
from engine.context import Context as EngineContext
from engine.events import EventHub
from proto import api_pb2 as pb

if TYPE_CHECKING:
    from cri.streaming.server import StreamingServer


@dataclass
class Context(EngineContext):
    """The engine context berthd builds, with what only the CRI front end reads."""

    hub: EventHub[pb.ContainerEventResponse] = field(default_factory=EventHub)
    metadata: MetadataCache = field(default_factory=MetadataCache)
    streaming: StreamingServer | None = None  # set by serve() once it listens
