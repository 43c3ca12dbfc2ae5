"""``python -m zfs_backend.cinderlab``: its ``--timeout`` refuses NaN, infinity, zero, negatives and huge
numbers before anything starts."""

from __future__ import annotations

import pytest

from zfs_backend.cinderlab.__main__ import main


@pytest.mark.parametrize("bad", ["nan", "inf", "0", "-5", "9" * 400, "soon"])
def test_absurd_timeouts_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["up", "--timeout", bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--timeout" in err and "Traceback" not in err
