"""The node inventory: an ansible-format YAML file naming the storage nodes and how to reach them.

Supported layout (what the lab writes, plus ordinary ansible variations)::

    all:
      vars: {ansible_user: root, ansible_ssh_private_key_file: ..., zfs_backend_known_hosts: ...}
      hosts: {node0: {ansible_host: 198.18.0.10}}
      children:
        storage_nodes:
          vars: {...}
          hosts:
            node1: {ansible_host: 198.18.0.11, ansible_port: 22}

Variables are inherited: ``all`` vars, then group vars from the outermost to the innermost group
(siblings at the same depth by name), then host vars. Top-level groups other than ``all`` are
treated as children of ``all``. Relative paths are resolved against the inventory's directory.

Recognised variables: ``ansible_host`` (default: the node name), ``ansible_port`` (22),
``ansible_user`` (root), ``ansible_ssh_private_key_file`` (or ``ansible_private_key_file``),
``zfs_backend_known_hosts`` (required), ``zfs_backend_bin`` (optional).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from ..config import Settings, load_settings
from ..errors import ConfigError, InvalidName, UnknownNode
from .validate import validate_address, validate_node_name, validate_user

if TYPE_CHECKING:
    from .ssh import SSHHost

__all__ = ["Inventory", "NodeSpec", "connect", "load_inventory"]

_MAX_DEPTH = 32


@dataclass(frozen=True)
class NodeSpec:
    """How to reach one node. ``vars``: every variable of the node after inheritance (read-only)."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    zfs_backend_bin: str | None = None
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)


@dataclass(frozen=True)
class Inventory:
    path: Path
    nodes: Mapping[str, NodeSpec]

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def node(self, name: str) -> NodeSpec:
        try:
            return self.nodes[name]
        except KeyError:
            have = ", ".join(self.nodes) or "no nodes"
            raise UnknownNode(f"unknown node {name!r}; inventory {self.path} has: {have}") from None

    def connect(self, name: str, settings: Settings | None = None, **kwargs: Any) -> SSHHost:
        """An :class:`SSHHost` for node ``name`` (connects lazily, on first use)."""
        from .ssh import SSHHost  # paramiko: loaded only by callers that run commands over it

        return SSHHost.from_spec(self.node(name), settings, **kwargs)


def load_inventory(
    path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
) -> Inventory:
    """Read and validate an inventory (default: ``Settings.inventory``). Raises ``ConfigError``."""
    p = Path(path) if path is not None else (settings or load_settings()).inventory
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no inventory at {p}: run `zfs-backend lab up` or set ZFS_BACKEND_INVENTORY"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read inventory {p}: {getattr(e, 'strerror', None) or e}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"inventory {p}: invalid YAML{where}: {problem}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"inventory {p}: expected a mapping with an `all` group at the top")
    merged = _collect(doc, p)
    nodes = {name: _spec(name, vars_, p) for name, vars_ in merged.items()}
    return Inventory(path=p, nodes=MappingProxyType(dict(sorted(nodes.items()))))


def connect(name: str, settings: Settings | None = None, **kwargs: Any) -> SSHHost:
    """An :class:`SSHHost` for node ``name`` from the configured inventory (connects lazily)."""
    s = settings or load_settings()
    return load_inventory(settings=s).connect(name, s, **kwargs)


# --- parsing ---------------------------------------------------------------------------------------


def _mapping(value: Any, what: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"inventory {path}: {what} must be a mapping, not {type(value).__name__}")
    return value


def _collect(doc: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Walk the group tree; return each host's variables after inheritance."""
    # per host: list of (depth, group name, group vars), and merged host vars
    group_vars: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    host_vars: dict[str, dict[str, Any]] = {}

    def walk(gname: str, group: Any, depth: int, chain: list[tuple[int, str, dict[str, Any]]]) -> None:
        if depth > _MAX_DEPTH:
            raise ConfigError(f"inventory {path}: groups nested too deep at {gname!r}")
        g = _mapping(group, f"group {gname!r}", path)
        unknown = set(g) - {"vars", "hosts", "children"}
        if unknown:
            raise ConfigError(
                f"inventory {path}: group {gname!r} has unknown keys: {', '.join(sorted(unknown))}"
            )
        here = [*chain, (depth, gname, _mapping(g.get("vars"), f"vars of group {gname!r}", path))]
        for hname, hv in _mapping(g.get("hosts"), f"hosts of group {gname!r}", path).items():
            hname = str(hname)
            hvars = _mapping(hv, f"host {hname!r}", path)
            group_vars.setdefault(hname, []).extend(here)
            host_vars.setdefault(hname, {}).update(hvars)
        for cname, child in _mapping(g.get("children"), f"children of group {gname!r}", path).items():
            walk(str(cname), child, depth + 1, here)

    walk("all", doc.get("all"), 0, [])
    for gname, group in doc.items():
        if gname != "all":
            walk(str(gname), group, 1, [])
    out: dict[str, dict[str, Any]] = {}
    for hname, chain in group_vars.items():
        merged: dict[str, Any] = {}
        seen: set[str] = set()
        for _, gname, gv in sorted(chain, key=lambda c: (c[0], c[1])):
            if gname not in seen:
                seen.add(gname)
                merged.update(gv)
        merged.update(host_vars[hname])
        out[hname] = merged
    return out


def _path_var(vars_: dict[str, Any], keys: tuple[str, ...], node: str, path: Path) -> Path | None:
    for k in keys:
        v = vars_.get(k)
        if v is not None:
            if not isinstance(v, str) or not v:
                raise ConfigError(f"inventory {path}: node {node}: {k} must be a path")
            p = Path(v).expanduser()
            return p if p.is_absolute() else path.parent / p
    return None


def _spec(name: str, v: dict[str, Any], path: Path) -> NodeSpec:
    where = f"inventory {path}: node {name}"
    try:
        validate_node_name(name)
        address = validate_address(str(v.get("ansible_host", v.get("ansible_ssh_host", name))))
        user = validate_user(str(v.get("ansible_user", v.get("ansible_ssh_user", "root"))))
    except InvalidName as e:
        raise ConfigError(f"{where}: {e}") from None
    raw_port = v.get("ansible_port", v.get("ansible_ssh_port", 22))
    try:
        port = int(raw_port)
    except (TypeError, ValueError):
        port = 0
    if isinstance(raw_port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: invalid ansible_port {raw_port!r}")

    key = _path_var(v, ("ansible_ssh_private_key_file", "ansible_private_key_file"), name, path)
    if key is None:
        raise ConfigError(f"{where}: no ansible_ssh_private_key_file")
    _check_private_key(key, where)
    known = _path_var(v, ("zfs_backend_known_hosts",), name, path)
    if known is None:
        raise ConfigError(f"{where}: no zfs_backend_known_hosts (host keys are always checked)")
    if not known.is_file():
        raise ConfigError(f"{where}: known_hosts {known} does not exist")
    bin_ = v.get("zfs_backend_bin")
    if bin_ is not None and (not isinstance(bin_, str) or not bin_):
        raise ConfigError(f"{where}: zfs_backend_bin must be a path")
    return NodeSpec(
        name=name,
        address=address,
        port=port,
        user=user,
        key_file=key,
        known_hosts=known,
        zfs_backend_bin=bin_,
        vars=MappingProxyType(dict(v)),
    )


def _check_private_key(key: Path, where: str) -> None:
    try:
        st = key.stat()
    except OSError as e:
        raise ConfigError(f"{where}: private key {key}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: private key {key} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{where}: private key {key} has mode {mode:04o}; run `chmod 600 {key}`")
