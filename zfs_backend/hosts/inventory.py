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

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings
from ..errors import ConfigError, InvalidName, UnknownNode
from ..private import private_dir, private_open
from .node_spec import NodeSpec
from .validate import validate_address, validate_node_name, validate_user

if TYPE_CHECKING:
    from .ssh import SSHHost

__all__ = ["Inventory", "NodeSpec", "connect", "load_inventory"]  # NodeSpec: re-exported from .node_spec

_MAX_DEPTH = 32
#: the parsed inventory kept as JSON in the home, by the SHA-256 of its text (see ``_parse``)
CACHE_NAME = "inventory.json"


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
    """Read and validate an inventory (default: ``Settings.inventory``). Raises ``ConfigError``.

    With ``settings`` (or no ``path``), the parsed document is cached in ``<home>/cache`` (see
    ``_parse``)."""
    if path is None:
        settings = settings or load_settings()
        p = settings.inventory
    else:
        p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no inventory at {p}: run `zfs-backend lab up` or set ZFS_BACKEND_INVENTORY"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read inventory {p}: {getattr(e, 'strerror', None) or e}") from e
    doc = _parse(text, p, None if settings is None else settings.home / "cache")
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


def _parse(text: str, path: Path, cache_dir: Path | None) -> Any:
    """The YAML document in ``text``. A command line pays ~30 ms for importing a YAML parser and parsing,
    a third of its start-up: so the document is also kept in ``cache_dir`` as JSON, keyed by the SHA-256
    of the text (exact: an edited inventory never reads a stale copy), and read back from there when the
    text is the same. Only documents that JSON carries unchanged are kept; the cache is private (0600 in
    a 0700 directory) and everything read from it is validated as if it had just been parsed. A cache
    that cannot be read or written is ignored."""
    key = hashlib.sha256(text.encode()).hexdigest()
    cache = None if cache_dir is None else cache_dir / CACHE_NAME
    if cache is not None:
        entry = _load_cached(cache)
        if isinstance(entry, dict) and entry.get("sha256") == key:
            return entry.get("doc")
    import yaml  # only when the cache misses

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"inventory {path}: invalid YAML{where}: {problem}") from e
    if cache is not None:
        _store(cache, key, doc)
    return doc


def _load_cached(cache: Path) -> Any:
    """The cache entry, if it is a regular file of ours, 0600, in a directory of ours that nobody else can
    write to (else None: somebody else's file is never trusted as an inventory)."""
    me = os.geteuid()
    try:
        d = os.stat(cache.parent)
        if d.st_uid != me or d.st_mode & 0o022:
            return None
        fd = os.open(cache, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != me or stat.S_IMODE(st.st_mode) != 0o600:
                return None
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _store(cache: Path, key: str, doc: Any) -> None:
    try:
        data = json.dumps({"sha256": key, "doc": doc}, sort_keys=True)
    except (TypeError, ValueError):
        return  # dates, sets, ...: not carried by JSON, so never cached
    if json.loads(data)["doc"] != doc:  # e.g. integer keys, tuples
        return
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    try:
        private_dir(cache.parent)
        fd = private_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, cache)
    except OSError as e:
        import logging  # only here: a command line that reads the inventory does not load logging

        logging.getLogger(__name__).debug("inventory cache %s not written: %s", cache, e)
        with contextlib.suppress(OSError):
            tmp.unlink()


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
