"""``zfs-backend replicate --transport``: ssh or tls reach ``snapshot_replicate``; anything else is one
usage line (exit 2); unset, the settings' default decides (``$ZFS_BACKEND_REPLICATION_TRANSPORT``)."""

from __future__ import annotations

from typing import Any

import pytest

from zfs_backend.cli import replicate_cmd
from zfs_backend.cli.main import build_parser
from zfs_backend.config import load_settings
from zfs_backend.errors import ConfigError


@pytest.mark.parametrize("given", [None, "ssh", "tls"])
def test_the_transport_reaches_the_api(monkeypatch: pytest.MonkeyPatch, given: str | None) -> None:
    seen: dict[str, Any] = {}

    def fake(*args: Any, **kw: Any) -> str:
        seen.update(kw)
        return "act"

    monkeypatch.setattr(replicate_cmd, "snapshot_replicate", fake)
    monkeypatch.setattr(replicate_cmd, "start_and_follow", lambda start, **kw: 0 if start() == "act" else 1)
    argv = ["replicate", "n1:p/f@s", "n2:p/f", *(["--transport", given] if given else [])]
    args = build_parser("replicate").parse_args(argv)
    assert replicate_cmd.cmd_replicate(args) == 0
    assert seen["transport"] == given


def test_another_transport_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser("replicate").parse_args(["replicate", "n1:p/f@s", "n2:p/f", "--transport", "udp"])
    assert e.value.code == 2
    assert "invalid choice: 'udp'" in capsys.readouterr().err


def test_the_settings_default() -> None:
    assert load_settings({}).replication_transport == "ssh"
    assert load_settings({"ZFS_BACKEND_REPLICATION_TRANSPORT": "tls"}).replication_transport == "tls"
    with pytest.raises(ConfigError, match="must be ssh or tls"):
        load_settings({"ZFS_BACKEND_REPLICATION_TRANSPORT": "quic"})
