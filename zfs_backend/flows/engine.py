"""Running flows: in this process, or posted to the jobboard for a conductor; resuming them; reading
them back from the logbook (``zfs-backend flow list|show|resume``).

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
from dataclasses import dataclass, field
from typing import Any

from taskflow import engines, states, task
from taskflow.persistence import models

from ..config import Settings
from ..errors import FlowError, FlowNotFound, ZfsBackendError
from .persistence import backend

__all__ = ["FlowRun", "describe", "find_flow", "list_flows", "resume_flow", "run_flow"]

ProgressFn = Callable[[str, str, float], None]  # (atom, state, progress 0..1)


@dataclass
class FlowRun:
    """What a flow run came to."""

    id: str
    name: str
    state: str
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


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


def _run_engine(engine: Any, fd: models.FlowDetail, on_progress: ProgressFn | None) -> FlowRun:
    _listen(engine, engine._flow, on_progress)
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
        return _run_engine(engine, fd, on_progress)


def find_flow(conn: Any, flow_id: str) -> tuple[models.LogBook, models.FlowDetail]:
    for book in conn.get_logbooks():
        for fd in book:
            if fd.uuid == flow_id or (fd.uuid.startswith(flow_id) and len(flow_id) >= 8):
                return book, fd
    raise FlowNotFound(f"no flow {flow_id}")


def resume_flow(settings: Settings, flow_id: str, *, on_progress: ProgressFn | None = None) -> FlowRun:
    """Carry a flow on from its logbook (after its controller died): finished atoms are skipped, a task
    that was running runs again (the replicate task re-attaches to its activity by the id it saved)."""
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        book, fd = find_flow(conn, flow_id)
        if fd.state in (states.SUCCESS, states.REVERTED):
            return FlowRun(fd.uuid, fd.name, str(fd.state))
        engine = engines.load_from_detail(
            fd, store=(fd.meta or {}).get("store"), backend=be, book=book, engine="serial"
        )
        return _run_engine(engine, fd, on_progress)


def describe(fd: models.FlowDetail) -> dict[str, Any]:
    """A flow detail as plain data: its state, inputs and atoms (state, progress, result)."""
    atoms = []
    for ad in fd:
        if ad.name.startswith("_TaskFlow_"):
            continue
        result = ad.results if ad.state == states.SUCCESS else None
        atoms.append(
            {
                "name": ad.name,
                "state": ad.state,
                "intention": ad.intention,
                "progress": float((ad.meta or {}).get("progress") or 0.0),
                "result": result if _plain(result) else repr(result),
                "error": None if ad.failure is None else ad.failure.exception_str,
            }
        )
    meta = fd.meta or {}
    return {
        "id": fd.uuid,
        "name": fd.name,
        "state": fd.state,
        "factory": (meta.get("factory") or {}).get("name"),
        "store": meta.get("store") or {},
        "created_at": meta.get("created_at"),
        "atoms": atoms,
    }


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool | list | tuple | dict)


def list_flows(settings: Settings) -> list[dict[str, Any]]:
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        out = [describe(fd) for book in conn.get_logbooks() for fd in book]
    return sorted(out, key=lambda d: d.get("created_at") or 0)


def show_flow(settings: Settings, flow_id: str) -> dict[str, Any]:
    with backend(settings) as be, contextlib.closing(be.get_connection()) as conn:
        return describe(find_flow(conn, flow_id)[1])


def raise_for(run: FlowRun) -> FlowRun:
    """The run, or a ``FlowError`` saying it did not succeed (and was reverted)."""
    if run.state != states.SUCCESS:
        raise FlowError(f"flow {run.id[:8]} {run.name}: {run.state.lower()}: {run.error or 'did not finish'}")
    return run
