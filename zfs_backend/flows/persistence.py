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
