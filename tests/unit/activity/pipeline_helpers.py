"""Shared helpers for pipeline tests: a deterministic producer and a dd consumer (argv lists), and a
pipeline started on a test context."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from zfs_backend.activity import ActivityContext, CommandPipeline, new_activity_id

MiB = 1 << 20

# writes `total` deterministic pseudo-random bytes, skipping the first `offset` (argv: total [offset])
PRODUCER = r"""
import random, sys
total = int(sys.argv[1]); offset = int(sys.argv[2]) if len(sys.argv) > 2 else 0
BS = 1 << 20
out = sys.stdout.buffer
block, skip = divmod(offset, BS)
pos = block * BS
while pos < total:
    data = random.Random(block).randbytes(BS)[: total - pos]
    out.write(data[skip:])
    skip = 0
    pos += BS
    block += 1
out.flush()
"""


def expected_bytes(total: int) -> bytes:
    out = bytearray()
    block = 0
    while len(out) < total:
        out += random.Random(block).randbytes(MiB)
        block += 1
    return bytes(out[:total])


def pipeline_params(out: Path, total: int, **extra: object) -> dict[str, object]:
    params: dict[str, object] = {
        "producer": {
            "argv": [sys.executable, "-c", PRODUCER, str(total)],
            "resume_argv": [sys.executable, "-c", PRODUCER, str(total), "{offset}"],
        },
        "consumer": {
            "argv": ["dd", f"of={out}", "bs=1M", "status=none"],
            "resume_argv": [
                "dd",
                f"of={out}",
                "bs=1M",
                "seek={offset}",
                "oflag=seek_bytes",
                "conv=notrunc",
                "status=none",
            ],
        },
        "total": total,
    }
    params.update(extra)
    return params


def start(ctx: ActivityContext, params: dict[str, Any], cls: Any = CommandPipeline) -> Any:
    """A ``cls`` activity of ``params``, persisted and started on ``ctx``."""
    rec = cls.new_record(new_activity_id(), params, ctx)
    act = cls(rec, ctx)
    act.persist_new()
    act.start()
    return act
