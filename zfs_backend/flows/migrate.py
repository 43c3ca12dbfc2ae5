"""Migration as a flow: ``volume migrate`` and Cinder's ``migrate_volume`` run the same TaskFlow flow, so a
migration whose controller died (SIGKILL, a lost host) is carried on by ``zfs-backend flow resume ID`` or a
conductor from its logbook.

``migrate_flow``: ``start`` (the ``migrate`` activity on the source node's agent, see
``driver.migration.start``; it provides the activity's id and the source's export as it was, both saved in
the logbook before anything else happens) → ``move`` (follows the activity by that id; at its hold before
the quiesce unexports the source and resumes it; once it succeeded, switches the export to the destination
and removes the source copy, ``driver.migration.Switch``) → ``record`` (the volume service's record: node
and location; nothing for a Cinder volume, whose record is Cinder's).

Resumed, ``start`` is not run again and ``move`` re-attaches to the same activity: at the hold it unexports
(again: idempotent) and resumes, a finished activity is switched, and a switch that already happened
(the source copy gone, the destination this activity's) is only made sure of (exported with the saved
grants). Should the crash come between the agent's start and the engine's save, the start runs again and
adopts the running twin (an activity of this kind on the same dataset) instead of starting a second one.

A failed or cancelled activity fails ``move``; the flow reverts: ``start``'s revert cancels a running
activity (which rolls the destination back and gives the source its mount back) and exports the source
again with its saved grants. A switch that fails half way is undone inside ``move`` (see ``_switch``).

The command line follows the activity itself (progress bar, Ctrl-C cancels): it installs a *follower*
for the run (:func:`migrate`'s ``follow``); a resumed flow or a conductor waits quietly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from taskflow import task
from taskflow.patterns import linear_flow

from ..activity.states import TERMINAL
from ..config import Settings
from ..driver.exports_format import Attachment, ExportEntry
from ..driver.migration import MigrationFailed, Switch, start
from ..driver.models import Volume
from ..driver.zfs_nfs import ZfsNfsDriver
from ..errors import InvalidName
from ..zfs.names import DatasetName, validate_node
from .engine import FlowRun, run_flow
from .env import env

__all__ = [
    "Follower",
    "cinder_migrate",
    "failed",
    "migrate",
    "migrate_flow",
    "migrate_store",
    "run_migration",
]

log = logging.getLogger("zfs_backend.flows")

#: follows a running activity, handing every record to the callback; returns when it is terminal
Follower = Callable[[Any, Callable[[Any], None]], None]

_FOLLOW: list[Follower] = []  # the command line's, for the run it makes in this process


def _drivers(
    source_node: str, source_parent: str | None, target_node: str, target_parent: str | None
) -> tuple[ZfsNfsDriver, ZfsNfsDriver]:
    def one(node: str, parent: str | None) -> ZfsNfsDriver:
        d = env().driver(node)
        if parent is None or parent == d.options.parent:
            return d
        return ZfsNfsDriver.for_node(env().settings, node, parent=parent)

    return one(source_node, source_parent), one(target_node, target_parent)


def _entry_data(entry: ExportEntry | None) -> list[list[str]] | None:
    return None if entry is None else [[a.id, a.client] for a in entry.attachments]


def _entry(src: ZfsNfsDriver, ds: DatasetName, saved: list[list[str]] | None) -> ExportEntry | None:
    """The source's export as saved in the logbook (its id and path are the source's as now)."""
    if saved is None:
        return None
    atts = tuple(Attachment(i, c) for i, c in saved)
    return ExportEntry(ds, 0, src.mountpoint(ds), tuple(sorted({a.client for a in atts})), atts)


class StartMigration(task.Task):
    """Starts the ``migrate`` activity (or adopts its running twin); provides ``{"activity", "node",
    "export"}`` (``export``: the source's attachments before the migration, None when not exported)."""

    default_provides = "migration"

    def execute(
        self,
        volume: dict[str, Any],
        source_node: str,
        source_parent: str | None,
        target_node: str,
        target_parent: str | None,
        tuning: dict[str, Any],
    ) -> dict[str, Any]:
        src, dst = _drivers(source_node, source_parent, target_node, target_parent)
        model = Volume(**volume)
        ds = src.dataset_of(model)
        saved = _entry_data(src.exports.get(ds))
        for a in env().agent(source_node).list():
            rec = a.record()
            if rec.kind == "migrate" and rec.state not in TERMINAL and rec.params.get("dataset") == str(ds):
                log.info("%s: adopting the running migration %s of %s", source_node, rec.id, ds)
                return {"activity": rec.id, "node": source_node, "export": saved}
        act = start(src, dst, model, node_for=env().agent, **tuning)
        return {"activity": act.id, "node": source_node, "export": saved}

    def revert(
        self, volume: dict[str, Any], source_node: str, source_parent: str | None, result: Any, **kw: Any
    ) -> None:
        if not isinstance(result, dict) or not result.get("activity"):
            return
        act = env().agent(result["node"]).get(result["activity"])
        if act.state not in TERMINAL:
            act.cancel()  # rolls the destination back, gives the source its mount and writability back
            act.wait(120)
        src = _drivers(source_node, source_parent, source_node, None)[0]
        ds = src.dataset_of(Volume(**volume))
        if result.get("export") is not None and src.zfs.exists(ds):
            entry = _entry(src, ds, result["export"])
            assert entry is not None
            src.export(ds, (), entry.attachments)


class MoveVolume(task.Task):
    """Follows the activity (acting at its hold), then switches the export; provides the model update
    (``provider_location``, ``quiesce_s``, ``clients``)."""

    default_provides = "update"

    def execute(
        self,
        volume: dict[str, Any],
        source_node: str,
        source_parent: str | None,
        target_node: str,
        target_parent: str | None,
        migration: dict[str, Any],
    ) -> dict[str, Any]:
        src, dst = _drivers(source_node, source_parent, target_node, target_parent)
        model = Volume(**volume)
        act = env().agent(migration["node"]).get(migration["activity"])
        sw = Switch(src, dst, model, act, entry=_entry(src, src.dataset_of(model), migration.get("export")))
        done = sw.switched()
        if done is not None:
            return done
        if _FOLLOW:
            _FOLLOW[-1](act, sw.at_hold)
        return sw.finish()  # waits (acting at the hold) when nobody followed; MigrationFailed when it failed


class RecordMigration(task.Task):
    """The volume service's record on the target (a volume of the service; Cinder keeps its own)."""

    def execute(self, service_volume: str | None, target_node: str, update: dict[str, Any]) -> None:
        if service_volume:
            from ..driver.volume_jobs import record_migration

            record_migration(env().service(), service_volume, target_node, update["provider_location"])


def migrate_flow(volume_id: str) -> linear_flow.Flow:
    return linear_flow.Flow(f"migrate-{volume_id}").add(
        StartMigration("start"), MoveVolume("move"), RecordMigration("record")
    )


def migrate_store(
    model: Volume,
    source_node: str,
    target_node: str,
    *,
    source_parent: str | None = None,
    target_parent: str | None = None,
    service_volume: str | None = None,
    tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The flow's inputs (plain data: what a resuming process rebuilds everything from)."""
    return {
        "volume": dataclasses.asdict(model),
        "source_node": source_node,
        "source_parent": source_parent,
        "target_node": target_node,
        "target_parent": target_parent,
        "service_volume": service_volume,
        "tuning": dict(tuning or {}),
    }


def run_migration(settings: Settings, store: dict[str, Any], *, follow: Follower | None = None) -> FlowRun:
    """Run the migration flow here (``follow``: the caller's way to follow the activity)."""
    if follow is not None:
        _FOLLOW.append(follow)
    try:
        return run_flow(settings, migrate_flow, {"volume_id": store["volume"]["id"]}, store)
    finally:
        if follow is not None:
            _FOLLOW.remove(follow)


def migrate(
    settings: Settings, name: str, to_node: str, *, follow: Follower | None = None, **tuning: Any
) -> FlowRun:
    """``volume migrate NAME --to NODE``: the service's volume ``name`` to ``to_node``, as a flow."""
    rec = env().service().get_volume(name)
    validate_node(to_node)
    if to_node == rec.node:
        raise InvalidName(f"volume {name} is on {to_node} already")
    store = migrate_store(rec.model(), rec.node, to_node, service_volume=name, tuning=tuning)
    return run_migration(settings, store, follow=follow)


def cinder_migrate(core: ZfsNfsDriver, model: Volume, host: Any) -> tuple[bool, dict[str, Any] | None]:
    """Cinder's ``migrate_volume`` through the same flow: ``(False, None)`` when ``host`` is not another
    node of this driver (Cinder's generic migration then), else the volume moved and ``(True,
    {"provider_location": ...})``. Runs on the Cinder driver's settings (its ``zfs_backend_home``: the
    logbook an operator's ``flow resume`` reads); Cinder keeps the volume's record itself."""
    from ..driver.migration import resolve_target, target_parent
    from .env import FlowEnv, set_env

    target = resolve_target(core, host)
    if target is None:
        return False, None
    settings = core.settings
    if (env().settings.home, env().settings.inventory) != (settings.home, settings.inventory):
        set_env(FlowEnv(settings))
    store = migrate_store(
        model,
        core.options.node,
        target,
        source_parent=str(core.options.parent),
        target_parent=target_parent(host),
    )
    run = run_migration(settings, store)
    if run.state != "SUCCESS":
        raise failed(run)
    return True, {"provider_location": run.results["update"]["provider_location"]}


def failed(run: FlowRun) -> MigrationFailed:
    """The one-line error of a migration flow that did not succeed."""
    return MigrationFailed(
        f"migration flow {run.id[:8]}: {run.state.lower()}: {run.error or 'did not finish'}"
    )
