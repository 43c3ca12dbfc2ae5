"""The rules of the house's shape, read from the source with :mod:`ast` (nothing of ``zfs_backend`` is
imported): the layer table, the seven rules and the ``KNOWN`` list of today's violations that another
branch removes. ``test_architecture.py`` runs them; ``docs/architecture.md`` shows the same table.

Rules (each finding is a tuple, the same shape as its ``KNOWN`` entries):

* ``cycle``: modules that import each other, directly or around a loop. Every import counts, also one
  inside a function (it still ties the two modules together); one under ``if TYPE_CHECKING:`` does not
  (it never runs, so it cannot make a partly initialised module), but it counts for ``layer``.
  A finding names the loop's modules, sorted.
* ``layer``: an import of a room that ``LAYERS`` does not allow the importer's room, TYPE_CHECKING
  imports included (a type from above is a dependency on above all the same). ``(importer, imported)``.
* ``private``: ``x._name`` where ``_name`` is neither a member of a class of the same module nor an
  attribute the module assigns itself: another module's private member (``driver._dataset(...)``).
  Not counted: ``self``/``cls``, dunders, attributes of a library module imported with ``import x``
  (``os._exit``, ``argparse._SubParsersAction``) and the standard library's public underscore names
  (``_replace``, ``_asdict``, ``_fields``, ``_make`` ...). A module-level ``_helper`` does not excuse
  ``x._helper``. ``from m import _name`` (not a module) counts too. ``(module, _name)``.
* ``size``: a module over ``MAX_LINES`` lines. ``(module,)``.
* ``init``: a package ``__init__.py`` with a statement other than its docstring, imports (also under
  ``if TYPE_CHECKING:``), ``__all__``, ``__version__`` and the ``_lazy`` pattern (``_EXPORTS = {...}``,
  ``__getattr__ = lazy_exports(__name__, _EXPORTS)``). ``(package,)``.
* ``error``: a public exception class defined outside ``errors`` (the one tree): its base is
  ``Exception`` or a class of ``errors``. A private one (``_Lost``) that never leaves its module may
  stay. ``(module, class)``.
* ``unused``: a module nothing imports (a type-only import in a package ``__init__`` is a re-export,
  not a use), that no sibling loads by name and that ``ENTRY_POINTS`` does not name. ``(module,)``.

Module names are dotted below ``zfs_backend`` (``replication.standby``; a package is its own name,
``cinder``; the top package's modules are ``errors``, ``config`` ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "zfs_backend"
MAX_LINES = 400

# The rooms, top to bottom: a room may import itself and every room below it, never one above.
ORDER = (
    "cli",
    "cinder",
    "flows",
    "driver",
    "agent",
    "kinds",
    "replication",
    "rpc",
    "activity",
    "zfs",
    "hosts",
    "base",
)
# Beside the order: what each of these may import (besides itself); the rooms above may import them
# where LAYERS says so.
BESIDE = {
    "lab": ("agent", "rpc", "zfs", "hosts", "base"),
    "cinderlab": ("zfs", "hosts", "base"),
}
# The table docs/architecture.md shows: room -> the rooms it may import (itself always).
LAYERS: dict[str, tuple[str, ...]] = {
    room: ORDER[i + 1 :] + (("lab", "cinderlab") if room == "cli" else ()) for i, room in enumerate(ORDER)
} | BESIDE
PURPOSE = {
    "cli": "the `zfs-backend` command line and the demos (`cli/demo*.py`)",
    "cinder": "the adapter that cinder-volume loads (`volume_driver=zfs_backend.cinder.ZfsNfsDriver`)",
    "flows": "TaskFlow workflows over activities: replicate, standby, migrate; jobboard and conductor",
    "driver": "the ZFS/NFS volume driver, its NFS exports and the controller's volume service",
    "agent": "the node agent (server): hosts, persists and resumes every kind of activity",
    "kinds": "the activity kinds built on the core: replicate, standby, backup, migrate",
    "replication": "the send -> receive core: plan, restart, wire, receiver, claims, grants, TLS channel",
    "rpc": "the agent protocol: client, transports (unix socket, SSH), remote activity handles",
    "activity": "the activity contract, state machine, SQLite store, byte-stream pipeline",
    "zfs": "typed zfs/zpool commands on any host: names, listings, the one place zfs runs",
    "hosts": "reaching a node: the Host interface, local, SSH, peer and fake hosts, the inventory",
    "base": "errors, config, private state, durable SQLite, lazy exports, node sockets",
    "lab": "the simulated lab: storage nodes as namespaces on one machine (beside the order)",
    "cinderlab": "a small real Cinder in front of the lab (beside the order)",
}

# Modules reached from outside the package's imports: not ``unused``.
ENTRY_POINTS = {
    "cli.main": "the zfs-backend console script (pyproject.toml)",
    "cinder.driver": "cinder-volume (volume_driver=zfs_backend.cinder.ZfsNfsDriver; the driver branch)",
    "cinderlab.tempest": "scripts/tempest",
    "cinderlab.tempest_results": "run as a script by cinderlab.tempest, in tempest's virtualenv",
    "hosts.fake": "FakeHost, the Host of the unit tests",
    "replication.tls_send": "the source's end of a TLS stream: python -m, argv from tls_channel.send_argv",
}

# Allowed underscore attributes that are public API of the standard library (namedtuple, os, sys ...).
STDLIB_UNDERSCORE = frozenset(
    {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_exit", "_getframe", "_current_frames"}
)

# Today's violations that another branch removes: (rule, *finding) -> the branch that owns the fix.
# Exact modules, edges and names, never a pattern. The lead empties this after merging; an entry that
# no longer occurs fails the test too (remove it), so the list only shrinks.
KNOWN: dict[tuple[str, ...], str] = {}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "__init__"


def room_of(module: str) -> str:
    head = module.split(".", 1)[0]
    return head if head in LAYERS else "base"


@dataclass
class Source:
    """One module: its name, whether it is a package ``__init__``, its parsed tree, its line count."""

    name: str
    is_package: bool
    tree: ast.Module
    lines: int


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    typing_only: bool


@dataclass
class Tree:
    """All modules of a package directory, parsed."""

    sources: dict[str, Source] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path = ROOT) -> Tree:
        tree = cls()
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name = module_name(path, root)
            tree.sources[name] = Source(
                name, path.name == "__init__.py", ast.parse(text, str(path)), len(text.splitlines())
            )
        return tree

    @classmethod
    def of(cls, modules: dict[str, str]) -> Tree:
        """A tree from ``{"a.b": source}`` (a name ending in ``.__init__`` is a package): for the tests."""
        tree = cls()
        for name, text in modules.items():
            is_package = name.endswith("__init__")
            name = name.removesuffix(".__init__") if name != "__init__" else name
            tree.sources[name] = Source(name, is_package, ast.parse(text), len(text.splitlines()))
        return tree

    def edges(self) -> Iterator[Edge]:
        for src in self.sources.values():
            for node, typing_only in _imports(src.tree):
                for target in self._targets(src, node):
                    if target != src.name:
                        yield Edge(src.name, target, node.lineno, typing_only)

    def _targets(self, src: Source, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zfs_backend"):
                    yield self._existing(alias.name.removeprefix("zfs_backend").lstrip("."))
            return
        if node.level:
            pkg = src.name.split(".") if src.is_package else src.name.split(".")[:-1]
            if src.name == "__init__":
                pkg = []
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join([*pkg, *([node.module] if node.module else [])])
        elif node.module and node.module.split(".")[0] == "zfs_backend":
            base = node.module.removeprefix("zfs_backend").lstrip(".")
        else:
            return
        for alias in node.names:
            yield self._resolve(base, alias.name)

    def _resolve(self, base: str, name: str) -> str:
        """``from base import name``: the submodule ``base.name``, else the submodule a package's
        ``__init__`` imports ``name`` from (its lazy export), else ``base``."""
        sub = f"{base}.{name}" if base else name
        if sub in self.sources:
            return sub
        pkg = self.sources.get(base or "__init__")
        if pkg is not None and pkg.is_package:
            for node, _ in _imports(pkg.tree):
                if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                    for target in self._targets(pkg, node):
                        if target != pkg.name:
                            return self._resolve_module(target, name)
        return self._existing(base)

    def _resolve_module(self, target: str, name: str) -> str:
        return target if target in self.sources else self._existing(target)

    def _existing(self, name: str) -> str:
        while name and name not in self.sources:
            name = name.rpartition(".")[0]
        return name or "__init__"


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import of a module, anywhere in it, with whether it sits under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST, typing_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, typing_only
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_one(stmt, True)
                for stmt in child.orelse:
                    yield from walk_one(stmt, typing_only)
            else:
                yield from walk(child, typing_only)

    def walk_one(node: ast.AST, typing_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only
        else:
            yield from walk(node, typing_only)

    yield from walk(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


# --- the rules -------------------------------------------------------------------------------------


def cycles(tree: Tree) -> set[tuple[str, ...]]:
    graph: dict[str, set[str]] = {name: set() for name in tree.sources}
    for edge in tree.edges():
        if not edge.typing_only:
            graph[edge.importer].add(edge.imported)
    return {("cycle", *sorted(scc)) for scc in _strongly_connected(graph) if len(scc) > 1}


def _strongly_connected(graph: dict[str, set[str]]) -> Iterator[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc.add(member)
                    if member == node:
                        break
                yield scc


def layer_violations(tree: Tree) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for edge in tree.edges():
        mine, theirs = room_of(edge.importer), room_of(edge.imported)
        if mine != theirs and theirs not in LAYERS[mine]:
            found.add(("layer", edge.importer, edge.imported))
    return found


def private_access(tree: Tree) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for src in tree.sources.values():
        members, foreign = _class_members(src.tree), _foreign_modules(src.tree)
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in foreign):
                    continue
                if node.attr not in members and node.attr not in STDLIB_UNDERSCORE:
                    found.add(("private", src.name, node.attr))
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("zfs_")):
                for target, alias in zip(tree._targets(src, node), node.names, strict=True):
                    if _private(alias.name) and not target.endswith(alias.name):
                        found.add(("private", src.name, alias.name))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _class_members(tree: ast.Module) -> set[str]:
    """Attributes the module's own classes have: methods and class attributes, and every attribute
    the module assigns (``self._x = ...``, ``other._x = ...``). A module-level function is not one: a
    ``x._helper`` with a module-level ``_helper`` still reads another module's private member."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(stmt.name)
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    names.add(stmt.target.id)
                elif isinstance(stmt, ast.Assign):
                    names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def _foreign_modules(tree: ast.Module) -> set[str]:
    """Names bound by ``import x`` of a module outside the package (``argparse._SubParsersAction``,
    ``os._Environ``: another library's affair, not a seam of this one)."""
    return {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if not alias.name.startswith("zfs_backend")
    }


def oversized(tree: Tree) -> set[tuple[str, ...]]:
    return {("size", src.name) for src in tree.sources.values() if src.lines > MAX_LINES}


def busy_inits(tree: Tree) -> set[tuple[str, ...]]:
    return {
        ("init", src.name)
        for src in tree.sources.values()
        if src.is_package and not all(_init_statement_ok(stmt) for stmt in src.tree.body)
    }


def _init_statement_ok(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return isinstance(stmt.value.value, str)
    if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
        return not stmt.orelse and all(isinstance(s, ast.Import | ast.ImportFrom) for s in stmt.body)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        target, value = stmt.targets[0].id, stmt.value
        if target in ("__all__", "__version__"):
            return True
        if target == "_EXPORTS":
            return isinstance(value, ast.Dict)
        if target == "__getattr__":
            return (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "lazy_exports"
            )
    return False


def unused(tree: Tree) -> set[tuple[str, ...]]:
    used = set(ENTRY_POINTS)
    for edge in tree.edges():
        if not edge.typing_only or not tree.sources[edge.importer].is_package:
            used.add(edge.imported)
    for src in tree.sources.values():
        used.update(_loaded_by_name(src))
    return {
        ("unused", src.name)
        for src in tree.sources.values()
        if src.name not in used and not src.is_package and not src.name.endswith("__main__")
    }


def _loaded_by_name(src: Source) -> Iterator[str]:
    """Siblings a module loads with ``importlib.import_module``: those a string constant of it names
    (``cli.main``'s table of commands, ``"lab_cmd"`` -> ``cli.lab_cmd``)."""
    calls = any(
        isinstance(node, ast.Attribute) and node.attr == "import_module" for node in ast.walk(src.tree)
    )
    if not calls:
        return
    package = src.name if src.is_package else src.name.rpartition(".")[0]
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            yield f"{package}.{node.value}" if package else node.value


def stray_errors(tree: Tree) -> set[tuple[str, ...]]:
    """Exception classes defined outside ``errors``: a public class whose base is ``Exception`` (or
    ``BaseException``) or a class of the ``errors`` module. A private one (``_Lost``) is control flow
    that never leaves its module and may stay."""
    home = tree.sources.get("errors")
    tree_names = {"Exception", "BaseException"} | (
        {n.name for n in home.tree.body if isinstance(n, ast.ClassDef)} if home else set()
    )
    found: set[tuple[str, ...]] = set()
    for src in tree.sources.values():
        if src.name == "errors":
            continue
        for node in ast.walk(src.tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & tree_names:
                    found.add(("error", src.name, node.name))
    return found


def findings(tree: Tree) -> set[tuple[str, ...]]:
    """Every violation of every rule."""
    return (
        cycles(tree)
        | layer_violations(tree)
        | private_access(tree)
        | oversized(tree)
        | busy_inits(tree)
        | unused(tree)
        | stray_errors(tree)
    )
