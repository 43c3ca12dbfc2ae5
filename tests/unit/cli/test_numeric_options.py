"""Every numeric option of the command line refuses absurd values with one line and exit 2, before anything
runs: huge (a 400-digit rate once ended in an ``OverflowError`` traceback), negative, zero where it means
nothing, NaN and infinity for floats, and words where a number is expected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zfs_backend.cli.main import main

HUGE = "9" * 400

#: (argv, a fragment of the one error line)
CASES: list[tuple[list[str], str]] = [
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--bwlimit", HUGE], "invalid rate"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--bwlimit", HUGE + "mbit"], "invalid rate"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--bwlimit", "2000T"], "invalid rate"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--recursive", "--parallel", "0"], "--parallel"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--recursive", "--parallel", "9"], "--parallel"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--recursive", "--parallel", HUGE], "--parallel"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--recursive", "--parallel", "two"], "--parallel"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--stall-timeout", "nan"], "--stall-timeout"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--stall-timeout", "5"], "--stall-timeout"),
    (["replicate", "node1:tank/a@s", "node2:tank/a", "--stall-timeout", HUGE], "--stall-timeout"),
    (["activity", "set", "act-x", "--bwlimit", HUGE], "invalid rate"),
    (["activity", "set", "act-x", "--bwlimit", "0.5k"], "invalid rate"),
    (["activity", "set", "act-x", "--bwlimit", "fast"], "invalid rate"),
    (["lab", "shape", "node1", "--rate", HUGE], "invalid rate"),
    (["lab", "up", "--pool-size", HUGE], "invalid size"),
    (["lab", "up", "--pool-size", "5000T"], "invalid size"),
    (["lab", "up", "--nodes", "many"], "--nodes"),
    (["lab", "up", "--nodes", HUGE], "--nodes"),
    (["lab", "up", "--nodes", "0"], "--nodes"),
    (["demo", "--size", HUGE], "invalid size"),
    (["volume", "create", "v1", "--node", "node1", "--size", HUGE], "invalid size"),
    (["volume", "create", "v1", "--node", "node1", "--size", "-1"], "invalid size"),
    (["volume", "create", "v1", "--node", "node1", "--size", "0"], "invalid size"),
    (["volume", "extend", "v1", "--size", HUGE], "invalid size"),
    (["activity", "wait", "act-x", "--timeout", "nan"], "--timeout"),
    (["activity", "wait", "act-x", "--timeout", "inf"], "--timeout"),
    (["activity", "wait", "act-x", "--timeout", "-1"], "--timeout"),
    (["activity", "wait", "act-x", "--timeout", HUGE], "--timeout"),
    (["activity", "watch", "--interval", "nan"], "--interval"),
    (["activity", "watch", "--interval", "0"], "--interval"),
    (["activity", "watch", "--interval", "-1"], "--interval"),
    (["top", "--interval", "nan"], "--interval"),
    (["top", "--interval", "0"], "--interval"),
    (["top", "--interval", "1e308"], "--interval"),
    (["standby", "create", "v1", "--standby", "node2", "--interval", "nan"], "--interval"),
    (["standby", "create", "v1", "--standby", "node2", "--interval", "inf"], "--interval"),
    (["standby", "create", "v1", "--standby", "node2", "--interval", "0"], "--interval"),
    (["standby", "create", "v1", "--standby", "node2", "--max-lag", "nan"], "--max-lag"),
    (["standby", "create", "v1", "--standby", "node2", "--max-lag", "-1"], "--max-lag"),
    (["standby", "create", "v1", "--standby", "node2", "--max-lag", "inf"], "--max-lag"),
    (["conductor", "--claim-expiry", "nan"], "--claim-expiry"),
    (["conductor", "--claim-expiry", "0"], "--claim-expiry"),
    (["conductor", "--claim-expiry", "-5"], "--claim-expiry"),
    (["conductor", "--max-jobs", "0"], "--max-jobs"),
    (["conductor", "--max-jobs", "-1"], "--max-jobs"),
    (["conductor", "--max-jobs", HUGE], "--max-jobs"),
    (["jobboard", "up", "--port", "-1"], "--port"),
    (["jobboard", "up", "--port", "0"], "--port"),
    (["jobboard", "up", "--port", "99999999"], "--port"),
    (["agent", "--status", "--metrics-port", "-1"], "--metrics-port"),
    (["agent", "--status", "--metrics-port", "70000"], "--metrics-port"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), CASES, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else v
)
def test_absurd_number_is_one_line_exit_2(
    argv: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    # nothing to reach: a value that got through would fail later on a missing inventory/agent/jobboard
    monkeypatch.setenv("ZFS_BACKEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZFS_BACKEND_INVENTORY", str(tmp_path / "missing.yml"))
    monkeypatch.delenv("ZFS_BACKEND_JOBBOARD", raising=False)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusal: usage + error, two lines
        rc = e.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert rc == 2 and fragment in err, err
    assert not (tmp_path / "home").exists()


def test_huge_bwlimit_through_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The reported bug, as a user meets it: a subprocess, one line on stderr, exit 2."""
    argv = ["replicate", "node1:tank/a@s", "node2:tank/a", "--bwlimit", HUGE]
    env = {"ZFS_BACKEND_HOME": str(tmp_path), "ZFS_BACKEND_INVENTORY": str(tmp_path / "missing.yml")}
    p = subprocess.run(
        [sys.executable, "-m", "zfs_backend.cli.main", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "invalid rate" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["activity", "wait", "act-x", "--timeout", "0"],
        ["activity", "wait", "act-x", "--timeout", "2.5"],
        ["top", "--interval", "0.5"],
        ["standby", "create", "v1", "--standby", "node2", "--interval", "0.5", "--max-lag", "0"],
        ["agent", "--status", "--metrics-port", "0"],
        ["conductor", "--max-jobs", "1", "--claim-expiry", "30"],
        ["lab", "up", "--nodes", "3", "--pool-size", "1.5G"],
        ["replicate", "node1:tank/a@s", "node2:tank/a", "--bwlimit", "1T"],
    ],
)
def test_sane_numbers_parse(argv: list[str]) -> None:
    from zfs_backend.cli.main import build_parser

    build_parser(argv[0]).parse_args(argv)
