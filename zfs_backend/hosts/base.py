"""The one small interface for running argv lists on a storage node.

A :class:`Host` runs a command to completion (:meth:`Host.run`) or gives the local argv that runs a
command on the node with its stdin/stdout wired to the caller (:meth:`Host.stream_argv`), which
pipelines use to stream bytes. Implementations: ``LocalHost`` (subprocess), ``SSHHost`` (paramiko for
commands, OpenSSH for streams) and ``FakeHost`` (unit tests).
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from ..errors import CommandFailed, UsageError

__all__ = ["DEFAULT_TIMEOUT", "CommandResult", "Host", "check_argv"]

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class CommandResult:
    node: str
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def check(self) -> CommandResult:
        if self.returncode != 0:
            raise CommandFailed(self.node, self.argv, self.returncode, self.err_text)
        return self


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Return ``argv`` as a tuple after checking it is a non-empty list of NUL-free strings."""
    if isinstance(argv, str | bytes):
        raise UsageError("argv must be a list of strings, not a single string")
    out = tuple(argv)
    if not out:
        raise UsageError("argv is empty")
    for a in out:
        if not isinstance(a, str):
            raise UsageError(f"argv element {a!r} is not a string")
        if "\0" in a:
            raise UsageError("argv element contains a NUL byte")
    return out


class Host(ABC):
    """A storage node commands can be run on."""

    name: str

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv`` to completion. Raises ``CommandFailed`` on non-zero exit when ``check``,
        ``CommandTimeout`` past ``timeout`` seconds."""

    @abstractmethod
    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs ``argv`` on this node with stdin/stdout/stderr passed through."""

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this node as a local child process (for byte streams)."""
        local = self.stream_argv(argv)
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(local, stdin=stdin, stdout=stdout, stderr=stderr, **kwargs)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
