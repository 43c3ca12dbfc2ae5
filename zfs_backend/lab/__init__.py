"""The simulated lab: storage nodes as namespaces on one machine, reached like real ones (SSH)."""

from .lab import Lab, NodeStatus
from .topology import LabLayout, NodeLayout, parse_size

__all__ = ["Lab", "LabLayout", "NodeLayout", "NodeStatus", "parse_size"]
