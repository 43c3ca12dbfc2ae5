"""``activity list`` and ``top`` ask the agent for a window of the history (every live activity, the
finished ones that finished last or recently), never the whole of it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytest

from zfs_backend.cli.main import main
from zfs_backend.cli.top_cmd import RECENT_S, SHOWN_LIMIT, NodeView, Top

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))  # --import-mode=importlib
from test_agent_daemon import Agent
from test_agent_retention import _seed


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    a = Agent(tmp_path)
    a.ids = _seed(a.home / "agent" / "activities.db", 7)  # type: ignore[attr-defined]
    a.start()
    monkeypatch.setenv("ZFS_BACKEND_HOME", str(a.home))
    monkeypatch.setenv("ZFS_BACKEND_AGENT_SOCKET", str(a.sock))
    monkeypatch.setenv("COLUMNS", "200")  # whole ids in the table
    yield a
    a.stop()


def test_activity_list_limit_all_and_the_note(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    ids: list[str] = agent.ids  # type: ignore[attr-defined]
    assert main(["activity", "list", "--json", "--limit", "3"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ids[-3:]
    assert main(["activity", "list", "--json", "--all"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ids
    assert main(["activity", "list", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "the 2 that finished last; --limit N or --all for more" in out
    assert ids[-1] in out and ids[0] not in out
    assert main(["activity", "list"]) == 0
    assert "--all for more" not in capsys.readouterr().out  # 7 < the default limit (20)


@pytest.mark.parametrize("argv", [["--limit", "-1"], ["--limit", "x"]])
def test_activity_list_bad_window_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["activity", "list", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--limit" in err and "Traceback" not in err


def test_activity_list_limit_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:  # argparse's own refusal: usage and one error line
        main(["activity", "list", "--limit", "2", "--all"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_top_asks_for_what_it_shows() -> None:
    top = Top([NodeView("node1")], argparse.Namespace(kind=None, state=None, sort="created"))
    now = time.time()
    assert top.window(now) == {"since": now - RECENT_S, "limit": SHOWN_LIMIT}
    top.key("a")  # also the finished ones
    assert top.window(now) == {"state": None, "limit": SHOWN_LIMIT}
    top.key("a")
    top.key("F")  # a state filter: that state's, however old
    assert top.window(now) == {"state": top.state, "limit": SHOWN_LIMIT} and top.state is not None


def test_activity_list_json_loads_no_rich() -> None:
    """``activity list --json`` draws nothing: its start-up (most of its cost) loads no rich."""
    import subprocess

    code = (
        "import sys; from zfs_backend.cli.main import build_parser\n"
        "build_parser('activity').parse_args(['activity', 'list', '--json'])\n"
        "import zfs_backend.cli.activity_cmd\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "zfs_backend.cli.activity_cmd" in out.split()
    assert not [m for m in out.split() if m == "rich" or m.startswith("rich.")]
