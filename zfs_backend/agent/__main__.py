"""``python -m zfs_backend.agent [run|rpc]``: the agent (default) or the rpc bridge, without the CLI."""

from __future__ import annotations

import sys

from ..config import load_settings
from .daemon import run_agent
from .rpc_bridge import rpc_bridge


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "run"
    if cmd == "run":
        return run_agent(load_settings())
    if cmd == "rpc":
        return rpc_bridge(load_settings())
    print(f"usage: python -m zfs_backend.agent [run|rpc] (got {cmd!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
