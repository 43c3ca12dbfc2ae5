"""The static architecture check (rules, table and ``KNOWN`` in ``architecture.py``): the package keeps
the rules but for ``KNOWN``, every ``KNOWN`` entry still occurs, ``docs/architecture.md`` shows the
table the check uses, and each rule fires on a small bad example."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the rules beside the tests
import architecture as arch

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
BRANCHES = {"driver", "rooms", "control", "vm"}


@pytest.fixture(scope="module")
def found() -> set[tuple[str, ...]]:
    return arch.findings(arch.Tree.read())


def test_the_package_keeps_the_rules(found: set[tuple[str, ...]]) -> None:
    new = sorted(found - set(arch.KNOWN))
    assert not new, "architecture rules broken (see tests/unit/architecture.py):\n" + "\n".join(map(str, new))


def test_every_known_violation_still_occurs(found: set[tuple[str, ...]]) -> None:
    gone = sorted(set(arch.KNOWN) - found)
    assert not gone, "fixed: remove from KNOWN in tests/unit/architecture.py:\n" + "\n".join(map(str, gone))


def test_known_names_its_owner() -> None:
    assert set(arch.KNOWN.values()) <= BRANCHES


def test_the_doc_shows_the_table() -> None:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\|\s*`(\w+)`\s*\|([^|]*)\|([^|]*)\|", line.strip())
        if m:
            rows[m[1]] = (m[2].strip(), tuple(re.findall(r"`(\w+)`", m[3])))
    assert rows == {room: (arch.PURPOSE[room], arch.LAYERS[room]) for room in arch.LAYERS}


def test_the_table_is_one_order_and_beside_it() -> None:
    assert set(arch.LAYERS) == set(arch.PURPOSE)
    assert "cli" not in arch.LAYERS["cinder"] and "flows" not in arch.LAYERS["driver"]
    assert arch.LAYERS["base"] == ()


# --- each rule fires on a small bad example ---------------------------------------------------------


def test_cycle_fires_on_a_function_level_loop_not_on_type_checking() -> None:
    tree = arch.Tree.of(
        {
            "hosts.__init__": '"""pkg"""',
            "hosts.a": "from .b import B\n",
            "hosts.b": "def f():\n    from . import a\n",
            "hosts.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import D\n",
            "hosts.d": "from .c import C\n",
        }
    )
    assert arch.cycles(tree) == {("cycle", "hosts.a", "hosts.b")}


def test_cycle_follows_a_lazy_package_export() -> None:
    tree = arch.Tree.of(
        {
            "zfs.__init__": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .api import Zfs\n",
            "zfs.api": "from .names import x\n",
            "zfs.names": "from zfs_backend.zfs import Zfs\n",
        }
    )
    assert arch.cycles(tree) == {("cycle", "zfs.api", "zfs.names")}


def test_layer_fires_on_an_upward_import_also_under_type_checking() -> None:
    tree = arch.Tree.of(
        {
            "replication.api": "def f():\n    from ..agent.connect import connect_node\n",
            "replication.plan": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from zfs_backend.flows.env import FlowEnv\n",
            "replication.ok": "from ..zfs.api import Zfs\nfrom ..errors import E\nfrom .plan import P\n",
            "agent.connect": "",
            "flows.env": "",
            "zfs.api": "",
            "errors": "",
            "lab.node": "from ..driver.zfs_nfs import D\n",
            "driver.zfs_nfs": "",
        }
    )
    assert arch.layer_violations(tree) == {
        ("layer", "replication.api", "agent.connect"),
        ("layer", "replication.plan", "flows.env"),
        ("layer", "lab.node", "driver.zfs_nfs"),
    }


def test_private_fires_on_another_modules_member_only() -> None:
    tree = arch.Tree.of(
        {
            "driver.zfs_nfs": (
                "class D:\n    def _dataset(self): ...\n    def g(self, other): other._dataset()\n"
            ),
            "driver.failover": (
                "import os, argparse\n"
                "def f(driver, row):\n"
                "    driver._dataset('v')\n"
                "    self._mine()\n"
                "    row._replace(a=1)\n"
                "    os._exit(1)\n"
                "    x: argparse._SubParsersAction\n"
                "    driver.__class__\n"
            ),
            "driver.ok": "class C:\n    _slot = 1\ndef f(c):\n    c._slot\n    c._seen = 1\n    c._seen\n",
            "driver.helper": "def _entry(): ...\ndef f(store):\n    store._entry()\n",
            "driver.imports": "from .zfs_nfs import _rel\nfrom .. import _lazy\n",
            "_lazy": "",
        }
    )
    assert arch.private_access(tree) == {
        ("private", "driver.failover", "_dataset"),
        ("private", "driver.helper", "_entry"),
        ("private", "driver.imports", "_rel"),
    }


def test_size_fires_over_the_limit() -> None:
    tree = arch.Tree.of({"a": "x = 1\n" * arch.MAX_LINES, "b": "x = 1\n" * (arch.MAX_LINES + 1)})
    assert arch.oversized(tree) == {("size", "b")}


def test_init_fires_on_more_than_re_exports() -> None:
    lazy = (
        '"""doc"""\nfrom typing import TYPE_CHECKING\nfrom .._lazy import lazy_exports\n'
        "if TYPE_CHECKING:\n    from .a import A\n"
        '__all__ = ["A"]\n_EXPORTS = {"A": "a"}\n__getattr__ = lazy_exports(__name__, _EXPORTS)\n'
    )
    tree = arch.Tree.of(
        {
            "good.__init__": lazy,
            "cls.__init__": '"""doc"""\nclass Driver:\n    pass\n',
            "fn.__init__": "def helper():\n    return 1\n",
            "else.__init__": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    x = 1\n"
            ),
            "plain": "class Driver:\n    pass\n",
        }
    )
    assert arch.busy_inits(tree) == {("init", "cls"), ("init", "fn"), ("init", "else")}


def test_unused_fires_on_a_module_nothing_imports() -> None:
    tree = arch.Tree.of(
        {
            "zfs.__init__": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import lzc\n",
            "zfs.lzc": "",
            "zfs.api": "",
            "zfs.cmd": "from .api import Zfs\n",
            "cli.main": "import importlib\nCOMMANDS = {'lab': 'lab_cmd'}\nimportlib.import_module('x')\n",
            "cli.lab_cmd": "",
            "cli.__main__": "",
        }
    )
    assert arch.unused(tree) == {("unused", "zfs.lzc"), ("unused", "zfs.cmd")}


def test_error_fires_on_an_exception_outside_the_tree() -> None:
    tree = arch.Tree.of(
        {
            "errors": "class ZfsBackendError(Exception): ...\nclass LabError(ZfsBackendError): ...\n",
            "lab.nfs": "from .. import errors\nclass NfsError(errors.LabError): ...\n",
            "zfs.parse": "class ParseError(Exception):\n    pass\n",
            "agent.transport": "class _Lost(Exception):\n    pass\nclass Frame:\n    pass\n",
        }
    )
    assert arch.stray_errors(tree) == {("error", "lab.nfs", "NfsError"), ("error", "zfs.parse", "ParseError")}


def test_the_check_imports_nothing_of_the_package() -> None:
    tree = ast.parse(Path(arch.__file__).read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("zfs_backend")]
