"""``get_volume_stats``: Cinder's standard keys and this project's capabilities, built from plain facts.

:func:`read_facts` gathers :class:`NodeFacts` on the node (space of the parent dataset, provisioned
sizes, the ZFS dialect; the driver adds the agent's activity kinds) and the pure :func:`build_stats`
turns them into the flat dict Cinder's scheduler reads. Every key is documented in the README
("Volume driver").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..zfs.api import Zfs
from ..zfs.dialect import Dialect
from ..zfs.names import DatasetName
from ..zfs.parse import parse_int
from . import layout
from .models import GIB
from .options import NodeOptions

__all__ = ["CAPABILITY_KEYS", "STANDARD_KEYS", "VENDOR_NAME", "NodeFacts", "build_stats", "read_facts"]

VENDOR_NAME = "zfs_backend"

STANDARD_KEYS = (
    "volume_backend_name",
    "vendor_name",
    "driver_version",
    "storage_protocol",
    "total_capacity_gb",
    "free_capacity_gb",
    "provisioned_capacity_gb",
    "allocated_capacity_gb",
    "reserved_percentage",
    "thin_provisioning_support",
    "thick_provisioning_support",
    "max_over_subscription_ratio",
    "multiattach",
    "compression",
    "dedup",
    "QoS_support",
    "sparse_copy_volume",
    "location_info",
    "total_volumes",
)
CAPABILITY_KEYS = (
    "backend_activities",
    "stateless_volume_operations",
    "can_snapshot_active_volume",
    "snapshot_replicate",
    "resumable_replication",
    "max_concurrent_activities",
    "zfs_dialect",
)


@dataclass(frozen=True)
class NodeFacts:
    """What the driver measured on the node. Bytes; ``provisioned``: sum of the volumes' sizes."""

    used: int
    available: int
    provisioned: int
    volumes: int
    compression: str
    dedup: str
    dialect: Dialect
    activity_kinds: tuple[str, ...] | None  # None: the node's agent could not be asked


def read_facts(zfs: Zfs, parent: DatasetName, activity_kinds: tuple[str, ...] | None) -> NodeFacts:
    """The facts of the node behind ``zfs`` about the volumes under ``parent``."""
    props = zfs.get(parent, ["used", "available", "compression", "dedup"])
    provisioned, count = layout.provisioned(zfs, parent)
    return NodeFacts(
        used=parse_int(props.get("used", "-")) or 0,
        available=parse_int(props.get("available", "-")) or 0,
        provisioned=provisioned,
        volumes=count,
        compression=props.get("compression", "off"),
        dedup=props.get("dedup", "off"),
        dialect=zfs.dialect,
        activity_kinds=activity_kinds,
    )


def _gb(n: int) -> float:
    return round(n / GIB, 2)


def build_stats(options: NodeOptions, facts: NodeFacts, version: str, export_address: str) -> dict[str, Any]:
    kinds = list(facts.activity_kinds or ())
    return {
        "volume_backend_name": options.volume_backend_name,
        "vendor_name": VENDOR_NAME,
        "driver_version": version,
        "storage_protocol": "NFS",
        "total_capacity_gb": _gb(facts.used + facts.available),
        "free_capacity_gb": _gb(facts.available),
        "provisioned_capacity_gb": _gb(facts.provisioned),
        "allocated_capacity_gb": _gb(facts.used),
        "reserved_percentage": options.reserved_percentage,
        "thin_provisioning_support": options.thin,
        "thick_provisioning_support": not options.thin,
        "max_over_subscription_ratio": float(options.max_over_subscription_ratio),
        "multiattach": True,
        "compression": facts.compression not in ("off", "-", ""),
        "dedup": facts.dedup not in ("off", "-", ""),
        "QoS_support": False,
        "sparse_copy_volume": True,
        "location_info": f"ZfsNfsDriver:{export_address}:{options.parent}",
        "total_volumes": facts.volumes,
        # this project's capabilities
        "backend_activities": kinds,
        "stateless_volume_operations": True,
        "can_snapshot_active_volume": True,
        "snapshot_replicate": "replicate" in kinds,
        "resumable_replication": facts.dialect.resumable_receive,
        "max_concurrent_activities": options.max_concurrent_activities,
        "zfs_dialect": str(facts.dialect),
    }
