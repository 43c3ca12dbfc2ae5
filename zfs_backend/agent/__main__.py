"""``python -m zfs_backend.agent [run [--test-kinds]|rpc [--peer]]``: the agent (default) or the rpc
bridge, without the CLI."""

from __future__ import annotations

import sys

from ..config import load_settings
from ..rpc.rpc_bridge import rpc_bridge
from .daemon import run_agent


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd, flags = (args[0], set(args[1:])) if args else ("run", set())
    if cmd == "run" and flags <= {"--test-kinds"}:
        return run_agent(load_settings(), test_kinds="--test-kinds" in flags)
    if cmd == "rpc" and flags <= {"--peer"}:
        return rpc_bridge(load_settings(), peer="--peer" in flags)
    print(
        f"usage: python -m zfs_backend.agent [run [--test-kinds]|rpc [--peer]] (got {args!r})",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
