"""Private state: directories created mode 0700 and files created mode 0600, never wider, not even for a
moment, whatever the process's umask.

Every layer that keeps state (the volume service's ``volumes.db``, the agent's store, log and lock, the
lab's files, keys and daemon logs) creates it through these helpers. Two rules:

* A directory is made 0700 only when it is created here; one that exists already keeps its mode (it may
  be ``/run`` or somebody else's: never chmod a directory we did not create).
* A state file is ours: it is created 0600, and one found wider (left by an older version) is narrowed
  to 0600. SQLite creates a database's ``-wal``, ``-shm`` and ``-journal`` with the database file's
  mode, so a database made here keeps them private too; :func:`private_sqlite` also narrows any that
  exist already.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "SQLITE_SIDECARS",
    "private_dir",
    "private_file",
    "private_open",
    "private_sqlite",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: str | os.PathLike[str]) -> list[Path]:
    """Make the directory ``path`` and its missing parents, each created mode 0700 (exactly: the mode
    is set again after ``mkdir``, which the umask can only narrow). Directories that exist are left as
    they are. Returns the directories created, outermost first."""
    target = Path(path)
    missing: list[Path] = []
    p = target
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to chmod
        os.chmod(d, DIR_MODE)
        created.append(d)
    if not target.is_dir():
        raise NotADirectoryError(f"{target} is not a directory")
    return created


def private_open(path: str | os.PathLike[str], flags: int = os.O_RDWR) -> int:
    """Open (creating it mode 0600 if missing) the state file ``path``; a file found with another mode is
    set to 0600. Symlinks are not followed. Returns the file descriptor."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _narrow(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create the state file ``path`` (and its directory, see :func:`private_dir`) mode 0600, or narrow
    an existing one to 0600. An existing file is never opened (closing a descriptor of a database
    would drop the SQLite locks this process holds on it): only its mode is changed, when needed.
    Returns the path."""
    p = Path(path)
    private_dir(p.parent)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        _narrow(p)
    else:
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    return p


def private_sqlite(path: str | os.PathLike[str]) -> Path:
    """Prepare the SQLite database ``path`` before ``sqlite3.connect``: the file 0600 in a private
    directory, and any ``-wal``/``-shm``/``-journal`` beside it narrowed to 0600."""
    p = private_file(path)
    for suffix in SQLITE_SIDECARS:
        side = p.with_name(p.name + suffix)
        with contextlib.suppress(FileNotFoundError):  # SQLite may remove it meanwhile
            _narrow(side)
    return p
