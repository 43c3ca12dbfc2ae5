"""A validated migration request: the params of the ``migrate`` kind (see :mod:`.migrate`).

What the controller (``driver.migration.start``, run by the migration flow) builds and the source node's
agent validates again (``from_params``): any parameter it does not know is refused, the cipher comes from
the allowlist.
``grant``: the id of the grant the destination's agent made for the migration (``create``; the controller
asks for it, see :mod:`.granted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..activity.relay import MAX_BWLIMIT_BPS
from ..errors import UsageError
from ..hosts.ciphers import DEFAULT_CIPHER, validate_cipher
from ..zfs.names import DatasetName, parse_dataset, validate_node
from .wire import validate_grant

__all__ = ["HOLDS", "KIND", "PHASES", "SNAP_PREFIX", "MigrateRequest"]

KIND = "migrate"
PHASES = ("full", "catchup", "quiesce", "done")
SNAP_PREFIX = "migrate-"
_TUNING = frozenset({"max_retries", "backoff_s", "space_check"})
_KEYS = frozenset(
    {"dataset", "destination_node", "destination", "catchup_below", "max_rounds", "hold_at"}
    | {"bwlimit_bps", "cipher", "grant"}
)
#: where the activity suspends itself: before the phase named, or before each of both (``catchup+quiesce``:
#: an operator's pre-sync hold, then the controller's hold before the quiesce)
HOLDS = (None, "catchup", "quiesce", "catchup+quiesce")
DEFAULT_CATCHUP_BELOW = 8 << 20
DEFAULT_MAX_ROUNDS = 6


@dataclass(frozen=True)
class MigrateRequest:
    """One migration, validated (params of the ``migrate`` kind)."""

    dataset: DatasetName
    destination_node: str
    destination: DatasetName
    catchup_below: int = DEFAULT_CATCHUP_BELOW
    max_rounds: int = DEFAULT_MAX_ROUNDS
    hold_at: str | None = None
    bwlimit_bps: int | None = None
    cipher: str = DEFAULT_CIPHER
    grant: str | None = None

    def to_params(self) -> dict[str, Any]:
        """The params; ``grant`` only when there is one (the controller adds it at the start)."""
        p: dict[str, Any] = {
            "dataset": str(self.dataset),
            "destination_node": self.destination_node,
            "destination": str(self.destination),
            "catchup_below": self.catchup_below,
            "max_rounds": self.max_rounds,
            "hold_at": self.hold_at,
            "bwlimit_bps": self.bwlimit_bps,
            "cipher": self.cipher,
        }
        if self.grant is not None:
            p["grant"] = self.grant
        return p

    @classmethod
    def from_params(cls, p: Any) -> MigrateRequest:
        if not isinstance(p, dict):
            raise UsageError("migrate params must be a JSON object")
        unknown = sorted(set(p) - _KEYS - _TUNING)
        if unknown:
            raise UsageError(f"migrate params {', '.join(map(repr, unknown))} are not accepted")
        for k in ("dataset", "destination_node", "destination"):
            if not isinstance(p.get(k), str):
                raise UsageError(f"migrate param {k!r} is required (a string)")
        ints = {}
        for k, default, low in (
            ("catchup_below", DEFAULT_CATCHUP_BELOW, 0),
            ("max_rounds", DEFAULT_MAX_ROUNDS, 1),
        ):
            v = p.get(k, default)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UsageError(f"migrate param {k!r} must be a whole number >= {low}")
            ints[k] = v
        hold = p.get("hold_at")
        if hold not in HOLDS:
            raise UsageError(
                "migrate param 'hold_at' must be 'catchup', 'quiesce', 'catchup+quiesce' or null"
            )
        bw = p.get("bwlimit_bps")
        if bw is not None and (
            isinstance(bw, bool) or not isinstance(bw, int) or not 0 < bw <= MAX_BWLIMIT_BPS
        ):
            raise UsageError(
                f"migrate param 'bwlimit_bps' must be a whole number from 1 to {MAX_BWLIMIT_BPS}"
            )
        return cls(
            dataset=parse_dataset(p["dataset"]),
            destination_node=validate_node(p["destination_node"]),
            destination=parse_dataset(p["destination"]),
            hold_at=hold,
            bwlimit_bps=bw,
            cipher=validate_cipher(p.get("cipher") or DEFAULT_CIPHER),
            grant=None if p.get("grant") is None else validate_grant(p["grant"]),
            **ints,
        )
