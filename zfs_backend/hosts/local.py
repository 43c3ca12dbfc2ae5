"""Run commands on this machine with subprocess."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence

from ..errors import CommandFailed, CommandTimeout
from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv

__all__ = ["LocalHost"]


class LocalHost(Host):
    def __init__(self, name: str | None = None) -> None:
        self.name = name or socket.gethostname()

    @property
    def dialect_key(self) -> tuple[str, ...]:
        """This machine's ZFS is the same for every ``LocalHost`` of it (see ``zfs.dialect.probe``)."""
        return ("local", self.name)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult:
        args = check_argv(argv)
        try:
            proc = subprocess.run(
                args,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise CommandTimeout(self.name, args, timeout or 0) from e
        except FileNotFoundError as e:
            raise CommandFailed(self.name, args, 127, f"{args[0]}: command not found") from e
        res = CommandResult(self.name, args, proc.returncode, proc.stdout, proc.stderr)
        return res.check() if check else res

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        return list(check_argv(argv))
