"""The simulated lab: storage nodes as namespaces on one machine, reached like real ones (SSH)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .lab import Lab, NodeStatus
    from .topology import LabLayout, NodeLayout, parse_size

__all__ = ["Lab", "LabLayout", "NodeLayout", "NodeStatus", "parse_size"]

_EXPORTS = {
    "Lab": "lab",
    "LabLayout": "topology",
    "NodeLayout": "topology",
    "NodeStatus": "lab",
    "parse_size": "topology",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
