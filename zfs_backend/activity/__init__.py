"""Backend activities: the contract, its state machine, the SQLite store, resource accounting, the
generic byte-stream pipeline, and the kind registry (see ``docs/activity.md``)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .core import (
        ActivityContext,
        KindFactory,
        LocalActivity,
        kind_factory,
        register_kind,
        registered_kinds,
    )
    from .handle import BackendActivity
    from .kinds import CommandPipeline
    from .pipeline import Endpoint, PipelineActivity
    from .report import ActivityRecord, Progress, Resources
    from .states import ALL_STATES, NON_TERMINAL, TERMINAL, check_transition
    from .store import ActivityStore, new_activity_id

__all__ = [
    "ALL_STATES",
    "NON_TERMINAL",
    "TERMINAL",
    "ActivityContext",
    "ActivityRecord",
    "ActivityStore",
    "BackendActivity",
    "CommandPipeline",
    "Endpoint",
    "KindFactory",
    "LocalActivity",
    "PipelineActivity",
    "Progress",
    "Resources",
    "check_transition",
    "kind_factory",
    "new_activity_id",
    "register_kind",
    "registered_kinds",
]

_EXPORTS = {
    "ALL_STATES": "states",
    "ActivityContext": "core",
    "ActivityRecord": "report",
    "ActivityStore": "store",
    "BackendActivity": "handle",
    "CommandPipeline": "kinds",
    "Endpoint": "pipeline",
    "KindFactory": "core",
    "LocalActivity": "core",
    "NON_TERMINAL": "states",
    "PipelineActivity": "pipeline",
    "Progress": "report",
    "Resources": "report",
    "TERMINAL": "states",
    "check_transition": "states",
    "kind_factory": "core",
    "new_activity_id": "store",
    "register_kind": "core",
    "registered_kinds": "core",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
