"""Shared fixtures and hooks. Lab fixtures live in tests/lab/conftest.py.

* Under ``CI=true`` a test that would be skipped (a missing prerequisite: root, a package, the cinder
  virtualenv, ...) is reported as a failure that names what was missing: a CI run cannot pass by
  skipping. Outside CI the skip stands, with its reason (``-ra`` lists them).
* The run ends with one line of counts: ``passed N, failed N, skipped N`` (errors count as failed).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def in_ci() -> bool:
    """True when the CI variable is set to anything but a false value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: tests may not skip for a missing prerequisite; {item.nodeid} would have skipped: "
            f"{_skip_reason(report)}"
        )
    return report


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "stats"):
        return
    stats = reporter.stats

    def count(*keys: str) -> int:
        return sum(len(stats.get(k, [])) for k in keys)

    reporter.write_line(
        f"passed {count('passed')}, failed {count('failed', 'error')}, skipped {count('skipped')}"
    )
