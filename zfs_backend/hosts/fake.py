"""A fake host for unit tests: a plain callable answers each argv; calls are recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import CommandFailed
from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv

__all__ = ["FakeHost", "Responder"]

# (argv, stdin) -> (returncode, stdout, stderr)
Responder = Callable[[tuple[str, ...], bytes | None], tuple[int, bytes | str, bytes | str]]


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


class FakeHost(Host):
    def __init__(self, responder: Responder, name: str = "fake") -> None:
        self.name = name
        self.responder = responder
        self.calls: list[tuple[str, ...]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult:
        args = check_argv(argv)
        self.calls.append(args)
        rc, out, err = self.responder(args, input)
        res = CommandResult(self.name, args, rc, _b(out), _b(err))
        if check and rc != 0:
            raise CommandFailed(self.name, args, rc, res.err_text)
        return res

    def stream_argv(self, argv: Sequence[str]) -> list[str]:
        return list(check_argv(argv))
