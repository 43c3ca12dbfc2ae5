"""The lab's record of itself (``lab.json``): its shape and every process it started, by pid."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from .access import write_private

__all__ = ["LabState", "record_pid"]

_STATE_LOCK = threading.Lock()


@dataclass
class LabState:
    network: str
    pool_size: int
    project_dir: str
    zfs_backend_bin: str
    nodes: list[str]
    agents: bool = True
    test_kinds: bool = False  # agents host the generic `pipeline` kind too (tests, benchmarks)
    provisioned: bool = False  # bare nodes deployed by ansible/site.yml (`lab up --provision`)
    pids: dict[str, dict[str, int]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise LabError(f"lab state {path} is unreadable ({e}); run `zfs-backend lab down`") from e

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.__dict__, indent=2) + "\n", 0o600)


def record_pid(state_file: Path, node: str, service: str, pid: int) -> None:
    """Add ``pid`` as ``node``'s ``service`` to the state file (threads bring nodes up in parallel)."""
    with _STATE_LOCK:
        st = LabState.load(state_file)
        if st is None:
            raise LabError(f"lab state {state_file} vanished while starting {node}:{service}")
        st.pids.setdefault(node, {})[service] = pid
        st.save(state_file)
