"""Cinder's database in the lab: a private MariaDB (Debian's ``mariadb-server``), made and started by
:func:`~.services.up` without systemd.

Its own data directory (``CinderLayout.mysql_dir``), files 0600 and directories 0700, a unix socket (0600)
and no TCP port at all (``--skip-networking``), none of ``/etc/mysql``'s settings. Root logs in by its
unix identity only; Cinder as a ``cinder`` user with its own password (``db.password``).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from ..errors import LabError, MissingDependency
from ..private import private_dir
from . import procs
from .config import CinderLayout

__all__ = [
    "ENV",
    "MARIADB",
    "MARIADBD",
    "MARIADB_INSTALL_DB",
    "argv",
    "check_prerequisites",
    "ensure_cinder_user",
    "ensure_database",
    "init",
    "ready",
]

MARIADBD = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
MARIADB = Path("/usr/bin/mariadb")
#: MariaDB sets its own umask from these (file and directory creation modes): private state, as ours
ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "UMASK": "0600",
    "UMASK_DIR": "0700",
}


def check_prerequisites() -> None:
    for tool in (MARIADBD, MARIADB_INSTALL_DB, MARIADB):
        if not tool.exists():
            raise MissingDependency(f"{tool} is missing: run scripts/bootstrap --cinder (mariadb-server)")


def argv(lay: CinderLayout) -> list[str]:
    """``mariadbd`` on our data directory and socket only, with small buffers (a lab's database is a few
    MiB)."""
    return [
        str(MARIADBD),
        "--no-defaults",
        f"--datadir={lay.mysql_dir}",
        f"--socket={lay.mysql_socket}",
        f"--pid-file={lay.run_dir / 'mariadb.pid'}",
        "--skip-networking",
        "--user=root",
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=16M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
    ]


def init(lay: CinderLayout) -> None:
    """The data directory with MariaDB's system tables, made once per home (``mariadb-install-db``)."""
    if (lay.mysql_dir / "mysql").is_dir():
        return
    private_dir(lay.mysql_dir)
    argv = [
        str(MARIADB_INSTALL_DB),
        "--no-defaults",
        f"--datadir={lay.mysql_dir}",
        "--user=root",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    procs.run_tool("mariadb-install-db", argv, env=ENV, timeout=300)


def ready(lay: CinderLayout) -> bool:
    """The server accepts connections on its socket."""
    if not lay.mysql_socket.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(lay.mysql_socket))
        except OSError:
            return False
    return True


def ensure_cinder_user(lay: CinderLayout, password: str) -> None:
    """The socket narrowed to 0600 (MariaDB makes it 0777, in a 0700 directory), Cinder's database and its
    ``cinder`` user with ``password``."""
    os.chmod(lay.mysql_socket, 0o600)
    ensure_database(lay, "cinder", password)


def ensure_database(lay: CinderLayout, name: str, password: str) -> None:
    """Database ``name`` and its user ``name`` with ``password`` (the SQL goes on stdin, not in an argv
    anyone can read). ``name``: one of ours (``cinder``, ``keystone``), never input."""
    if name not in ("cinder", "keystone"):
        raise LabError(f"no database {name!r} in the lab's Cinder")
    sql = (
        f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4;\n"
        f"CREATE USER IF NOT EXISTS '{name}'@'localhost' IDENTIFIED BY '{password}';\n"
        f"ALTER USER '{name}'@'localhost' IDENTIFIED BY '{password}';\n"
        f"GRANT ALL PRIVILEGES ON {name}.* TO '{name}'@'localhost';\n"
    )
    r = subprocess.run(
        [str(MARIADB), "--no-defaults", f"--socket={lay.mysql_socket}", "--user=root", "--batch"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if r.returncode != 0:
        raise LabError(f"creating the {name} database failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
