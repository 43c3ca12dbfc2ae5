"""Running flows: in this process, or posted to the jobboard for a conductor; resuming them
(``zfs-backend flow resume``). Reading them back from the logbook is :mod:`.runs`.

A flow is made by a factory (a module-level function TaskFlow re-imports by name); its factory name and
arguments and its ``store`` (the flow's inputs) are saved in its flow detail before it runs, so that any
process (this one after a crash, or a conductor) rebuilds the same flow and carries it on from the
logbook: finished atoms are not run again, their results are read back.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from taskflow import engines, states, task
from taskflow.persistence import models

from ..config import Settings
from ..errors import ZfsBackendError
from .persistence import backend
from .runs import FlowRun, find_flow

# FlowRun: re-exported, the type run_flow and resume_flow return (defined in .runs with the logbook side).
__all__ = ["FlowRun", "resume_flow", "run_flow"]

ProgressFn = Callable[[str, str, float], None]  # (atom, state, progress 0..1)


def _tasks(flow: Any) -> Iterator[Any]:
    for node, _meta in flow.iter_nodes():
        if isinstance(node, task.Task):
            yield node
        elif hasattr(node, "iter_nodes"):
            yield from _tasks(node)


def _listen(engine: Any, flow: Any, on_progress: ProgressFn | None) -> None:
    """``on_progress(atom, state, fraction)`` for every atom state change and task progress event."""
    if on_progress is None:
        return

    def on_state(state: str, details: dict[str, Any]) -> None:
        on_progress(str(details.get("atom_name") or details.get("task_name")), state, 0.0)

    engine.atom_notifier.register("*", on_state)
    for t in _tasks(flow):

        def on_update(event: str, details: dict[str, Any], name: str = t.name) -> None:
            on_progress(name, "PROGRESS", float(details.get("progress") or 0.0))

        t.notifier.register(task.EVENT_UPDATE_PROGRESS, on_update)


def _run_engine(engine: Any, flow: Any, fd: models.FlowDetail, on_progress: ProgressFn | None) -> FlowRun:
    _listen(engine, flow, on_progress)
    try:
        engine.run()
    except ZfsBackendError as e:
        return FlowRun(fd.uuid, fd.name, str(engine.storage.get_flow_state()), error=str(e))
    except Exception as e:  # a task's own failure (TaskFlow wraps several in WrappedFailure)
        return FlowRun(
            fd.uuid, fd.name, str(engine.storage.get_flow_state()), error=f"{type(e).__name__}: {e}"
        )
    return FlowRun(
        fd.uuid, fd.name, str(engine.storage.get_flow_state()), results=dict(engine.storage.fetch_all())
    )


def run_flow(
    settings: Settings,
    factory: Callable[..., Any],
    factory_kwargs: dict[str, Any],
    store: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    wait: bool = True,
) -> FlowRun:
    """Create the flow's logbook and run it here, or post it to the jobboard (``Settings.jobboard``)
    and wait for a conductor to finish it (``wait``)."""
    flow = factory(**factory_kwargs)
    name = f"{flow.name}"
    with backend(settings) as be:
        book = models.LogBook(name)
        fd = models.FlowDetail(name, str(uuid.uuid4()))
        book.add(fd)
        fd.meta = {"store": store, "created_at": time.time()}
        with contextlib.closing(be.get_connection()) as conn:
            conn.save_logbook(book)
        engines.save_factory_details(fd, factory, (), factory_kwargs, backend=be)
        if settings.jobboard:
            from .jobboard import post_and_wait

            return post_and_wait(settings, be, book, fd, store, wait=wait)
        engine = engines.load(flow, flow_detail=fd, book=book, backend=be, store=store, engine="serial")
        return _run_engine(engine, flow, fd, on_progress)


def resume_flow(settings: Settings, flow_id: str, *, on_progress: ProgressFn | None = None) -> FlowRun:
    """Carry a flow on from its logbook (after its controller died): finished atoms are skipped, a task
    that was running runs again (the replicate task re-attaches to its activity by the id it saved)."""
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        book, fd = find_flow(conn, flow_id)
        if fd.state in (states.SUCCESS, states.REVERTED):
            return FlowRun(fd.uuid, fd.name, str(fd.state))
        flow = engines.flow_from_detail(fd)  # what engines.load_from_detail does, keeping the flow
        engine = engines.load(
            flow, flow_detail=fd, store=(fd.meta or {}).get("store"), backend=be, book=book, engine="serial"
        )
        return _run_engine(engine, flow, fd, on_progress)
