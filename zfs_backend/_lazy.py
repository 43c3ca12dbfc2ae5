"""Lazy package exports (PEP 562): ``from zfs_backend.zfs import Zfs`` keeps working, but a package's
``__init__`` no longer imports every submodule (and paramiko, rich, yaml with them) when one small
module of it is needed. The command line starts in a fraction of the time, and a node's forced SSH
command (``zfs-backend peer-exec``) loads only name validation.

A package lists ``name -> submodule`` and sets ``__getattr__ = lazy_exports(__name__, exports)``;
type checkers see the real imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """``__getattr__`` for ``package``: ``exports[name]`` is the submodule (relative, without the dot)
    that defines ``name``; a name equal to its submodule's name is the submodule itself."""

    def __getattr__(name: str) -> object:
        sub = exports.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{sub}")
        value = module if name == sub else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
