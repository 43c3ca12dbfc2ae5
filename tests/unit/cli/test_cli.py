"""CLI behaviour that needs no lab: help, rate/size parsing, one-line errors with exit codes."""

from __future__ import annotations

import pytest

from zfs_backend.cli.main import main
from zfs_backend.cli.render import human_bytes, human_duration, parse_rate
from zfs_backend.errors import UsageError


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("100mbit", 100_000_000),
        ("20M", 20 * 8 << 20),
        ("20MB/s", 20 * 8 << 20),
        ("1gbit", 10**9),
        ("512k", 512 * 8 << 10),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize("bad", ["fast", "", "-5M", "1", "10 mbit; ls"])
def test_parse_rate_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(bad)


def test_human() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_duration(75) == "1m15s"


def test_help_lists_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for group in ("lab", "activity", "agent", "rpc", "demo"):
        assert group in out


def test_bad_input_is_one_line_and_nonzero(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZFS_BACKEND_HOME", "/nonexistent-zfs-backend-home")
    rc = main(["lab", "shape", "node1", "--rate", "fast"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "invalid rate" in err


def test_unknown_node_for_activity(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ZFS_BACKEND_INVENTORY", str(tmp_path / "missing.yml"))
    rc = main(["activity", "list", "--node", "node1"])
    err = capsys.readouterr().err
    assert rc == 3 and "no inventory" in err and "Traceback" not in err


def test_lab_up_provision_and_agent_modes_parse() -> None:
    from zfs_backend.cli.main import build_parser

    p = build_parser("lab")
    assert p.parse_args(["lab", "up", "--provision"]).provision is True
    assert p.parse_args(["lab", "up"]).provision is False
    p = build_parser("agent")
    args = p.parse_args(["agent", "--daemon", "--env-file", "/etc/zfs-backend/agent.env"])
    assert (args.daemon, args.stop, args.status, args.env_file) == (
        True,
        False,
        False,
        "/etc/zfs-backend/agent.env",
    )
    with pytest.raises(SystemExit):
        p.parse_args(["agent", "--daemon", "--stop"])


def test_agent_bad_env_file_is_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "agent.env"
    bad.write_text("not a setting\n")
    rc = main(["agent", "--status", "--env-file", str(bad)])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and "KEY=VALUE" in err


def test_top_counts_every_key_of_a_read() -> None:
    from zfs_backend.cli.top_cmd import split_keys

    assert split_keys("FFFF") == ["F", "F", "F", "F"]  # typed faster than a refresh: none is lost
    assert split_keys("\x1b[Ax\x1b[B") == ["\x1b[A", "x", "\x1b[B"]
    assert split_keys("\x1b[5~q") == ["\x1b[5~", "q"]
    assert split_keys("") == []


def test_top_fits_the_screen_and_keeps_the_message() -> None:
    """Many activities on a short terminal: the rows scroll to the selected one, the message and the
    nodes' line stay on the screen (CI found the message cut off below a long table)."""
    import argparse

    from rich.console import Console

    from zfs_backend.activity.report import ActivityRecord
    from zfs_backend.cli.top_cmd import NodeView, Top

    recs = [
        ActivityRecord(
            id=f"act-{i:026d}", kind="replicate", node="node1", state="running", created_at=float(i)
        )
        for i in range(60)
    ]
    views = [NodeView("node1", records=recs), NodeView("node2", error="connection refused")]
    top = Top(views, argparse.Namespace(kind=None, state=None, sort="created"))
    top.selected, top.on_top = ("node1", recs[10].id), False  # as after moving the cursor
    top.message = "suspend: something happened"
    console = Console(width=100, height=24, record=True, color_system=None)
    console.print(top.render(24))
    out = console.export_text()
    assert len(out.splitlines()) <= 24, out
    assert "suspend: something happened" in out and "node2:down" in out and "UNREACHABLE" in out
    assert recs[10].id in out and recs[59].id not in out  # scrolled to the selection (newest first)
    assert recs[23].id in out and recs[24].id not in out  # scrolled no further than needed
    assert "of 60" in out
    everything = Console(width=100, record=True, color_system=None)
    everything.print(top.render())
    text = everything.export_text()
    assert all(r.id in text for r in recs)  # height 0: every row


def test_follow_without_a_terminal_prints_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Output to a pipe: no progress bar, the summary as one plain line, the exit code from the state."""
    from zfs_backend.activity.report import ActivityRecord, Progress
    from zfs_backend.cli.progress import run_in_foreground

    class Done:
        id, node, kind = "act-1", "node1", "replicate"

        def __init__(self, state: str) -> None:
            self.rec = ActivityRecord(
                id=self.id,
                kind=self.kind,
                node=self.node,
                state=state,
                status=0 if state == "succeeded" else 3,
                progress=Progress(624, 624),
            )

        def record(self) -> ActivityRecord:
            return self.rec

        def wait_record(self, timeout: float) -> ActivityRecord:
            return self.rec

    assert run_in_foreground(Done("succeeded"), label="x", as_json=False, detach=False) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.startswith("act-1 done: 624 B of 624 B") and out.count("\n") == 1
    assert run_in_foreground(Done("failed"), label="x", as_json=True, detach=False) == 3  # type: ignore[arg-type]
    assert '"state": "failed"' in capsys.readouterr().out


def test_top_cursor_stays_on_the_newest_until_moved() -> None:
    """Activities that appear after the first screen (a node answering later, a new replication) do
    not leave the cursor on an older row: ``s`` acts on the newest until a key moves the cursor."""
    import argparse

    from zfs_backend.activity.report import ActivityRecord
    from zfs_backend.cli.top_cmd import NodeView, Top

    def rec(i: int) -> ActivityRecord:
        return ActivityRecord(
            id=f"act-{i:03d}", kind="replicate", node="n", state="running", created_at=float(i)
        )

    slow = NodeView("node1")
    top = Top(
        [NodeView("node2", records=[rec(1), rec(2)]), slow],
        argparse.Namespace(kind=None, state=None, sort="created"),
    )
    top.render(20)
    assert top.selected == ("node2", "act-002")
    slow.records = [rec(3)]  # node1 answers later, with a newer activity
    top.render(20)
    assert top.selected == ("node1", "act-003")
    top.key("j")  # the user moves: the cursor stays where they put it
    slow.records = [rec(3), rec(4)]
    top.render(20)
    assert top.selected == ("node2", "act-002")
    top.key("k")
    top.key("k")  # back on the first row: following the newest again
    slow.records = [rec(3), rec(4), rec(5)]
    top.render(20)
    assert top.selected == ("node1", "act-005")


def _fake_command(monkeypatch: pytest.MonkeyPatch, *, quick: bool) -> list[int]:
    """``zfs-backend replicate`` replaced by a command that prints and returns 3; ``os._exit`` recorded."""
    import argparse

    import zfs_backend.cli.main as cli_main

    def build(_command: str | None = None) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.add_argument("command")
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(func=lambda _a: print("printed before the exit") or 3, quick_exit=quick)
        return p

    exits: list[int] = []

    def fake_exit(rc: int) -> None:
        exits.append(rc)
        raise SystemExit(rc)

    monkeypatch.setattr(cli_main, "build_parser", build)
    monkeypatch.setattr(cli_main.os, "_exit", fake_exit)
    monkeypatch.setattr("sys.argv", ["zfs-backend", "replicate"])
    return exits


def test_quick_exit_only_for_marked_commands_run_as_the_program(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exits = _fake_command(monkeypatch, quick=True)
    with pytest.raises(SystemExit):
        main()  # as the program: the marked command ends the process with its code
    assert exits == [3]
    assert "printed before the exit" in capsys.readouterr().out
    assert main(["replicate"]) == 3  # called in-process (tests, other programs): returns
    assert exits == [3]


def test_no_quick_exit_for_unmarked_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    exits = _fake_command(monkeypatch, quick=False)
    assert main() == 3
    assert exits == []


def test_client_commands_are_marked_quick_exit() -> None:
    from zfs_backend.cli.main import build_parser

    for argv in (["replicate", "n1:p/f@s", "n2:p/f"], ["activity", "show", "x"], ["activity", "list"]):
        assert build_parser(argv[0]).parse_args(argv).quick_exit is True
    for argv in (["lab", "status"], ["agent"]):
        assert getattr(build_parser(argv[0]).parse_args(argv), "quick_exit", False) is False


def test_replicate_client_loads_only_what_it_needs() -> None:
    """What ``zfs-backend replicate`` imports before it reaches the agent (its start-up is most of the fixed
    cost of a replication from a shell): none of the heavy or agent-side modules."""
    import subprocess
    import sys

    code = (
        "import sys; from zfs_backend.cli.main import build_parser\n"
        "build_parser('replicate').parse_args(['replicate', 'n1:p/f@s', 'n2:p/f'])\n"
        "import zfs_backend.rpc.connect, zfs_backend.replication.api\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "zfs_backend.replication.api" in loaded
    heavy = {"yaml", "rich", "paramiko", "logging", "sqlite3", "pyroute2", "taskflow"}
    agent_side = {
        "zfs_backend.activity.core",
        "zfs_backend.activity.store",
        "zfs_backend.replication.plan",
        "zfs_backend.hosts.peer",
        "zfs_backend.kinds.replicate",
        "zfs_backend.zfs.api",
    }
    assert loaded & (heavy | agent_side) == set()


def test_top_acts_only_on_a_row_it_shows() -> None:
    """A filter that hides the selected row (or shows no row) leaves nothing selected: ``x``/``s``/``r``
    never reach an activity that is not on the screen (found in CI: the state filter moved to
    ``running`` after the replication had finished, and ``x`` asked to cancel the row selected under the
    previous filter)."""
    import argparse

    from zfs_backend.activity.report import ActivityRecord
    from zfs_backend.cli.top_cmd import NodeView, Top

    def rec(i: int, state: str) -> ActivityRecord:
        return ActivityRecord(
            id=f"act-{i:03d}", kind="replicate", node="n", state=state, created_at=float(i), finished_at=0.0
        )

    calls: list[str] = []
    view = NodeView("node1", records=[rec(1, "cancelled"), rec(2, "succeeded")])
    top = Top([view], argparse.Namespace(kind=None, state="cancelled", sort="created"))
    top.act = lambda verb: calls.append(verb)  # type: ignore[method-assign]
    top.render(20)
    assert top.selected == ("node1", "act-001")
    top.state = "running"  # as after F: no running activity any more
    for k in ("x", "y", "s", "r"):
        top.key(k)
    assert calls == [] and top.selected is None and top.confirm is None
    assert "nothing selected" in top.message
    top.render(20)
    assert top.selected is None
    top.state = "succeeded"  # the key itself (before any render) moves the cursor onto what is shown
    top.key("s")
    assert calls == ["suspend"] and top.selected == ("node1", "act-002")
