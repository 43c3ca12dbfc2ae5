"""The node agent's log: JSON lines (one object per record: ts, level, logger, msg, and any ``extra=``
fields) to ``Settings.agent_dir / "agent.log"`` (0600, in a directory created 0700) and to stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..private import private_dir, private_open

__all__ = ["JsonFormatter", "setup_logging"]

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(log_path: Path | None, *, stderr: bool = True) -> logging.Logger:
    log = logging.getLogger("zfs_backend")
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = JsonFormatter()
    if log_path is not None:
        private_dir(log_path.parent)
        fd = private_open(log_path, os.O_WRONLY | os.O_APPEND)
        fh = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    if stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        log.addHandler(sh)
    log.propagate = False
    return logging.getLogger("zfs_backend.agent")
