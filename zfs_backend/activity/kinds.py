"""Built-in activity kinds. ``pipeline``: a generic producer → relay → consumer of argv lists.

A test kind: agents host it only when started with ``--test-kinds``, and both ends run on the agent's
own node (``host`` is ``local`` or the node's name): the only way to another node is a kind that
knows what it runs there (``replicate``), through the peer's narrow key.

Params of the ``pipeline`` kind (JSON)::

    {
      "producer": {"host": "local", "argv": [...], "resume_argv": [..., "skip={offset}", ...]},
      "consumer": {"host": "local", "argv": [...], "resume_argv": [..., "seek={offset}", ...]},
      "total": 12345,               # optional: bytes expected (m); 0/absent = unknown
      "restart": "offset",          # "offset" | "rerun" | "none"; default: "offset" when both sides
                                    #   have resume_argv, else "rerun"
      "offset_probe": {"host": ..., "argv": [...]},  # optional, "offset" mode: prints the byte count
                                    #   the consumer really holds (e.g. ["stat", "-c", "%s", FILE])
      "rollback": {"host": ..., "argv": [...]},      # optional: run after cancel (e.g. ["rm", "-f", F])
      "bwlimit_bps": 1048576,       # optional token-bucket limit
      "max_retries": 3, "backoff_s": 1.0
    }

``{offset}`` inside a ``resume_argv`` element is replaced by the decimal byte offset; nothing else is
interpreted (argv lists, no shell).
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..hosts.base import check_argv
from .core import LOCAL_HOST_NAMES, ActivityContext, register_kind
from .pipeline import Endpoint, PipelineActivity
from .relay import MAX_BWLIMIT_BPS
from .report import ActivityRecord

__all__ = ["CommandPipeline"]

_RESTART_MODES = ("offset", "rerun", "none")


def _side(params: dict[str, Any], key: str, node: str, required: bool = True) -> dict[str, Any] | None:
    side = params.get(key)
    if side is None and not required:
        return None
    if not isinstance(side, dict):
        raise UsageError(f"pipeline param {key!r} must be an object with 'argv'")
    check_argv(side.get("argv") or [])
    if side.get("resume_argv") is not None:
        check_argv(side["resume_argv"])
    host = side.get("host", "local")
    if not isinstance(host, str):
        raise UsageError(f"pipeline param {key}.host must be a string")
    if host not in LOCAL_HOST_NAMES and host != node:
        raise UsageError(f"pipeline param {key}.host: a pipeline runs on its own node only, not on {host!r}")
    return side


class CommandPipeline(PipelineActivity):
    """The ``pipeline`` kind: everything comes from ``params``."""

    KIND = "pipeline"

    def __init__(self, record: ActivityRecord, ctx: ActivityContext) -> None:
        p = record.params
        self._prod = _side(p, "producer", ctx.node)
        self._cons = _side(p, "consumer", ctx.node)
        self._probe = _side(p, "offset_probe", ctx.node, required=False)
        self._undo = _side(p, "rollback", ctx.node, required=False)
        resumable = bool(
            self._prod and self._prod.get("resume_argv") and self._cons and self._cons.get("resume_argv")
        )
        mode = p.get("restart", "offset" if resumable else "rerun")
        if mode not in _RESTART_MODES:
            raise UsageError(f"pipeline param restart must be one of {', '.join(_RESTART_MODES)}")
        if mode == "offset" and not resumable:
            raise UsageError("restart 'offset' needs resume_argv on both producer and consumer")
        self.restart_mode = mode
        self.tune_retries(p, "bad pipeline param")
        try:
            self._expected = int(p.get("total", 0) or 0)
            bw = p.get("bwlimit_bps")
            if bw is not None and not (0 <= float(bw) <= MAX_BWLIMIT_BPS):  # NaN fails too
                raise UsageError(
                    f"pipeline param bwlimit_bps must be 0-{MAX_BWLIMIT_BPS} bytes/s, not {bw!r}"
                )
        except (TypeError, ValueError) as e:
            raise UsageError(f"bad pipeline param: {e}") from e
        super().__init__(record, ctx)

    def estimate_total(self) -> int:
        return self._expected

    def _endpoint(self, side: dict[str, Any], offset: int) -> Endpoint:
        host = self.ctx.host(side.get("host"))
        if offset > 0:
            return Endpoint(host, [a.replace("{offset}", str(offset)) for a in side["resume_argv"]])
        return Endpoint(host, list(side["argv"]))

    def build_producer(self, offset: int) -> Endpoint:
        assert self._prod is not None
        return self._endpoint(self._prod, offset)

    def build_consumer(self, offset: int) -> Endpoint:
        assert self._cons is not None
        return self._endpoint(self._cons, offset)

    def restart_offset(self, delivered: int) -> int:
        if self._probe is None:
            return delivered
        res = self.ctx.host(self._probe.get("host")).run(self._probe["argv"], timeout=60)
        held = int(res.text.split()[0])
        return min(held, self._expected) if self._expected else held

    def rollback(self) -> None:
        if self._undo is not None:
            self.ctx.host(self._undo.get("host")).run(self._undo["argv"], timeout=300)


register_kind(CommandPipeline.KIND, CommandPipeline)
