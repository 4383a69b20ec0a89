"""Types critest's conftest hands to tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.fixtures.cri_client import CriClient, run_container


@dataclass(frozen=True)
class Target:
    """One runtime under test: a test-id name and its endpoint (None: start it ourselves)."""

    name: str
    endpoint: str | None = None


@dataclass
class Pod:
    """A running sandbox created for one test, with the config containers must be given."""

    cri: CriClient
    id: str
    config: Any

    def run(self, image: str, command: list[str], name: str = "c") -> str:
        """Start a container in this pod; it goes away with the pod."""
        return run_container(self.cri, self.id, self.config, image, command, name)

    def exec(self, container_id: str, cmd: list[str], timeout: int = 30) -> Any:
        """ExecSync; returns the response (stdout, stderr, exit_code)."""
        req = self.cri.pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self.cri.runtime.ExecSync(req, timeout=timeout + 10)
