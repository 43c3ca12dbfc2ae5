"""The test-suite hooks of tests/conftest.py: under CI=true a skip is a failure naming what was missing,
and every run ends with one line of counts. Runs pytest on a throwaway suite that uses a copy of that
conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = """
import pytest

def test_passes():
    pass

def test_needs_tool():
    pytest.skip("needs frobctl (Debian package frob)")

@pytest.mark.skipif(True, reason="needs root")
def test_needs_root():
    pass
"""


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_outside_ci_skips_stand_and_counts_end_the_run(tmp_path: Path) -> None:
    r = _run(tmp_path, None)
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1] == "passed 1, failed 0, skipped 2"


def test_under_ci_a_skip_fails_naming_what_is_missing(tmp_path: Path) -> None:
    r = _run(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    assert "would have skipped: needs frobctl (Debian package frob)" in r.stdout
    assert "would have skipped: needs root" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "passed 1, failed 2, skipped 0"


def test_ci_false_is_not_ci(tmp_path: Path) -> None:
    assert _run(tmp_path, "false").returncode == 0
