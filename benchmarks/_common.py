"""What several benchmarks share: the command line timed as a user runs it, and the ``--json`` output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zfs_backend.config import Settings

#: the checkout's own command line (the benchmark's virtualenv)
BIN = str(Path(sys.prefix) / "bin" / "zfs-backend")


def cli(settings: Settings, *args: str, timeout: float = 3600) -> float:
    """Wall clock of ``zfs-backend ARGS`` on the benchmark lab, from the call to its exit; a failure
    stops the benchmark naming the command."""
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
    }
    t0 = time.monotonic()
    r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"`zfs-backend {' '.join(args)}` failed: {r.stderr.strip()}")
    return took


def write_json(dest: str, figures: Any) -> None:
    """``--json FILE``: the figures, indented; ``-`` writes them to standard output."""
    text = json.dumps(figures, indent=1)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n")
