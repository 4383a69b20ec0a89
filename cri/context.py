"""What every servicer shares: config, metadata store and the runtime handles."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cri.config import Config
from cri.store import Store

Condition = tuple[bool, str, str]


def cgroup_version(root: str) -> str:
    """v2 only when the root itself is cgroup2; this machine's hybrid layout counts as v1."""
    return "v2" if Path(root, "cgroup.controllers").exists() else "v1"


@dataclass
class Context:
    config: Config
    store: Store
    started_at: float = field(default_factory=time.time)

    @property
    def cgroup_version(self) -> str:
        return cgroup_version(self.config.runtime.cgroup_root)

    def runtime_ready(self) -> Condition:
        """The runtime is ready when its state dir is usable."""
        if not os.access(self.config.state_dir, os.W_OK):
            return False, "StateDirUnwritable", f"{self.config.state_dir} is not writable"
        return True, "", ""

    def network_ready(self) -> Condition:
        """Ready when a CNI config exists; kubelet keeps pods off the node until then."""
        conf_dir = Path(self.config.cni.conf_dir)
        confs = sorted(p for p in conf_dir.glob("*") if p.suffix in (".conf", ".conflist", ".json"))
        if not confs:
            return False, "NoCNIConfig", f"no network config found in {conf_dir}"
        return True, "", ""

    def describe_config(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self.config)))
