"""Tempest's results as JSON: run by :mod:`.tempest` in the tempest virtualenv's Python (which has
subunit and testtools), never imported by the project.

    stestr last --subunit | python tempest_results.py

Prints one JSON list: ``{"id": ..., "status": "success|fail|skip|xfail|uxsuccess", "reason": ...}`` per
test (``reason``: a skip's reason; a class skipped in ``setUpClass`` is one entry, as tempest counts it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import subunit  # type: ignore[import-not-found]
import testtools  # type: ignore[import-not-found]


def main() -> int:
    found: list[dict[str, Any]] = []

    def on_test(test: dict[str, Any]) -> None:
        details = test.get("details", {})
        reason = details["reason"].as_text().strip() if "reason" in details else ""
        found.append({"id": test["id"], "status": test["status"], "reason": reason})

    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()
    json.dump(found, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
