"""TaskFlow persistence: its SQLAlchemy backend (``taskflow.persistence.backends.impl_sqlalchemy``),
SQLite in the home by default (``Settings.flow_db``; any SQLAlchemy URL, e.g. MySQL, works the same).

Every flow gets its own logbook (one flow detail in it): the engine saves each atom's state and result
there as it goes, which is what makes a flow resumable by another process after a crash. An SQLite file
is created private (0600, in a 0700 directory) and in WAL mode, with a busy timeout: the command line,
conductors and ``flow list`` share it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from taskflow.persistence import backends as tf_backends
from taskflow.persistence import models

from ..config import Settings
from ..errors import ConfigError
from ..private import private_sqlite

__all__ = ["backend", "sqlite_path"]

_UPGRADED: set[str] = set()
_LOCK = threading.Lock()


def sqlite_path(url: str) -> str | None:
    """The file of an ``sqlite:///…`` URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite:///") or url.rstrip("/") in ("sqlite:", "sqlite:///:memory:"):
        return None
    path = url[len("sqlite:///") :]
    return path or None


_PRAGMAS_SET = False


def _sqlite_pragmas() -> None:
    """SQLite connections of this process's flows: WAL with ``synchronous=NORMAL`` (a commit survives
    the process being killed, as TaskFlow's resumption needs; only a power cut may lose the last ones)
    and a busy timeout (conductors and commands share the file)."""
    global _PRAGMAS_SET
    if _PRAGMAS_SET:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    _PRAGMAS_SET = True


def _conf(url: str) -> dict[str, Any]:
    conf: dict[str, Any] = {"connection": url}
    if url.startswith("sqlite"):
        conf["engine_args"] = {"connect_args": {"timeout": 30}}
    return conf


@contextlib.contextmanager
def backend(settings: Settings) -> Iterator[Any]:
    """The persistence backend for ``settings`` (its schema created once per process)."""
    url = settings.flow_db
    path = sqlite_path(url)
    if path is not None:
        _sqlite_pragmas()
        private_sqlite(path)
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    try:
        be = tf_backends.fetch(_conf(url))
    except Exception as e:
        raise ConfigError(f"flow persistence {url!r}: {e}") from e
    try:
        with _LOCK:
            if url not in _UPGRADED:
                with contextlib.closing(be.get_connection()) as conn:
                    conn.upgrade()
                _UPGRADED.add(url)
        yield be
    finally:
        be.close()


def new_logbook(name: str) -> models.LogBook:
    return models.LogBook(name)
