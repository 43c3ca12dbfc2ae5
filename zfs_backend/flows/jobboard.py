"""Many controllers: flows posted as jobs on a **Redis jobboard** (TaskFlow's ``impl_redis``) and run by
``zfs-backend conductor`` processes (TaskFlow's blocking conductor), with the logbook in the shared
persistence backend.

A conductor claims a job **with an expiry** and keeps extending it while it works (as Octavia's
``RedisDynamicLoggingConductor`` does: a Redis claim has no expiry by default, and the job of a dead
conductor would stay claimed forever). When a conductor is SIGKILLed, its claim lapses after
``claim_expiry_s`` and another conductor claims the job, loads the flow from the logbook and carries
it on: finished atoms are not run again, and the replicate task re-attaches to its activity (one
transfer only).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from functools import partial
from typing import Any
from urllib.parse import urlparse

from taskflow import exceptions as tf_exc
from taskflow.conductors.backends import impl_blocking
from taskflow.jobs import backends as job_backends
from taskflow.listeners import base as listener_base

from ..config import Settings
from ..errors import ConfigError
from .persistence import backend
from .redis_auth import read_password
from .runs import FlowRun

__all__ = ["DEFAULT_CLAIM_EXPIRY_S", "jobboard", "post_and_wait", "run_conductor"]

DEFAULT_CLAIM_EXPIRY_S = 30.0
NAMESPACE = "zfs_backend"
log = logging.getLogger("zfs_backend.flows")


def _redis_conf(url: str, password: str) -> dict[str, Any]:
    """TaskFlow's conf of the Redis jobboard at ``url`` (``redis://HOST:PORT[/DB]``), with ``password``
    (read from its file: never in the URL, which the environment and command lines carry)."""
    u = urlparse(url)
    if u.scheme != "redis" or not u.hostname:
        raise ConfigError(f"jobboard {url!r}: expected redis://HOST:PORT[/DB]")
    if u.password or u.username:
        raise ConfigError(
            "the jobboard's URL carries a password: put it in its password file instead "
            "($ZFS_BACKEND_JOBBOARD_PASSWORD_FILE, mode 0600)"
        )
    conf: dict[str, Any] = {
        "board": "redis",
        "host": u.hostname,
        "port": u.port or 6379,
        "namespace": NAMESPACE,
        "password": password,
    }
    db = (u.path or "/").strip("/")
    if db:
        conf["db"] = int(db)
    return conf


@contextlib.contextmanager
def jobboard(settings: Settings, persistence: Any) -> Any:
    if not settings.jobboard:
        raise ConfigError("no jobboard configured: set ZFS_BACKEND_JOBBOARD=redis://HOST:PORT/DB")
    conf = _redis_conf(settings.jobboard, read_password(settings.jobboard_password_file))
    board = job_backends.fetch(NAMESPACE, conf, persistence=persistence)
    try:
        board.connect()
    except tf_exc.JobFailure as e:  # unreachable, or the password refused: one line, not a traceback
        cause = getattr(e, "cause", None) or e.__cause__
        what = (str(e).splitlines() or ["cannot connect"])[0]
        why = " ".join(str(cause).split()) if cause else ""
        raise ConfigError(f"jobboard {settings.jobboard}: {what}{f': {why}' if why else ''}") from None
    try:
        yield board
    finally:
        board.close()


def post_and_wait(
    settings: Settings, be: Any, book: Any, fd: Any, store: dict[str, Any], *, wait: bool = True
) -> FlowRun:
    """Post the flow as a job; with ``wait``, block until a conductor consumed it and read its end from
    the logbook."""
    with jobboard(settings, be) as board:
        job = board.post(fd.name, book=book, details={"store": store, "flow_uuid": fd.uuid})
        log.info("posted flow %s as job %s", fd.uuid, job.uuid)
        if not wait:
            return FlowRun(fd.uuid, fd.name, "POSTED")
        while not job.wait(timeout=5.0):
            pass
    from .runs import show_flow

    d = show_flow(settings, fd.uuid)
    errors = [a["error"] for a in d["atoms"] if a["error"]]
    return FlowRun(fd.uuid, fd.name, d["state"], error="; ".join(errors) or None)


class _ExtendExpiry(listener_base.Listener):  # type: ignore[misc]
    """Every state change of the job's flow extends its claim."""

    def __init__(self, engine: Any, job: Any, expiry: float) -> None:
        super().__init__(engine)
        self.job, self.expiry = job, expiry

    def _extend(self, state: str, details: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.job.extend_expiry(self.expiry)

    _task_receiver = _flow_receiver = _retry_receiver = _extend


class Conductor(impl_blocking.BlockingConductor):  # type: ignore[misc]
    def __init__(self, *args: Any, claim_expiry_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_expiry_s = claim_expiry_s

    def _listeners_from_job(self, job: Any, engine: Any) -> list[Any]:
        return [*super()._listeners_from_job(job, engine), _ExtendExpiry(engine, job, self.claim_expiry_s)]


def _keep_claims(board: Any, name: str, expiry: float, stop: threading.Event) -> None:
    """Extend the claims this conductor holds (a task may run for longer than the expiry)."""
    while not stop.wait(expiry / 4):
        with contextlib.suppress(Exception):
            for job in board.iterjobs(ensure_fresh=True):
                with contextlib.suppress(Exception):
                    if board.find_owner(job) == name:
                        job.extend_expiry(expiry)


def run_conductor(
    settings: Settings,
    name: str | None = None,
    *,
    claim_expiry_s: float = DEFAULT_CLAIM_EXPIRY_S,
    max_jobs: int | None = None,
) -> int:
    """Claim and run flows until SIGTERM/SIGINT (``zfs-backend conductor``)."""
    name = name or f"conductor-{socket.gethostname()}"
    with backend(settings) as be, jobboard(settings, be) as board:
        board.claim = partial(board.claim, expiry=claim_expiry_s)  # a dead conductor's claim lapses
        conductor = Conductor(name, board, persistence=be, engine="serial", claim_expiry_s=claim_expiry_s)
        stop = threading.Event()
        keeper = threading.Thread(target=_keep_claims, args=(board, name, claim_expiry_s, stop), daemon=True)
        keeper.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: conductor.stop())
        log.info("conductor %s: claiming jobs from %s", name, settings.jobboard)
        try:
            conductor.run(max_dispatches=max_jobs)
        finally:
            stop.set()
            conductor.wait(10)
    return 0
