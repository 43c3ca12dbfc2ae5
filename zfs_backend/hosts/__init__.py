"""Reaching a storage node: one interface (:class:`Host`), local, SSH and fake implementations."""

from .base import DEFAULT_TIMEOUT, CommandResult, Host, check_argv
from .fake import FakeHost
from .local import LocalHost

__all__ = ["DEFAULT_TIMEOUT", "CommandResult", "FakeHost", "Host", "LocalHost", "check_argv"]
