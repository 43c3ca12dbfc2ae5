"""``python -m zfs_backend.cinderlab up|down|status`` (what ``scripts/cinder-up`` / ``cinder-down`` run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import load_settings
from ..errors import UsageError, ZfsBackendError
from .config import PROJECT_ID, CinderLayout
from .keystone import load_accounts
from .services import AUTH, down, status, up

ROOT = Path(__file__).resolve().parents[2]


def _timeout(text: str) -> float:
    """``--timeout``: a finite number of seconds, 1 to a day (NaN, infinity, 0 and negatives refused)."""
    try:
        value = float(text) if len(text) <= 32 else float("nan")
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86400:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be 1-86400 seconds, not {text[:32]!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zfs_backend.cinderlab", description=__doc__)
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument(
        "--purge", action="store_true", help="up: start from an empty database; down: remove the state"
    )
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-cinder", help="the virtualenv holding cinder")
    ap.add_argument("--timeout", type=_timeout, default=300.0, help="up: seconds to wait for each step")
    ap.add_argument(
        "--replication-device",
        action="append",
        default=[],
        metavar="NODE:STANDBY",
        help="up: replication_device = backend_id:STANDBY in NODE's backend (Cinder's replication v2.1)",
    )
    ap.add_argument(
        "--auth",
        choices=AUTH,
        default="keystone",
        help="up: cinder-api behind keystone (started with it; the default) or noauth",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    lay = CinderLayout(load_settings(), args.venv.resolve())
    try:
        if args.command == "up":
            pairs = [d.split(":", 1) for d in args.replication_device]
            if any(len(p) != 2 for p in pairs):
                raise UsageError("--replication-device wants NODE:STANDBY")
            report = up(lay, purge=args.purge, timeout=args.timeout, replication=dict(pairs), auth=args.auth)
            for w in report.warnings:
                print(f"cinder up: warning: {w}", file=sys.stderr)
            if args.json:
                print(json.dumps(report.to_dict()))
            else:
                ports = ", ".join(f"{k} {v}" for k, v in report.ports.items())
                print(f"cinder is up: {report.endpoint} ({args.auth}); backends {', '.join(report.backends)}")
                print(f"loopback ports: {ports}; state in {lay.root}")
                print(f"took {report.seconds.get('total')} s ({report.seconds})")
                if load_accounts(lay) is None:
                    print(
                        f"client: {lay.bin('cinder')} --os-auth-type noauth --os-user-id admin "
                        f"--os-project-id {PROJECT_ID} --os-endpoint {report.endpoint} "
                        "--os-volume-api-version 3.70 list"
                    )
                else:
                    print(
                        f"client: {lay.bin('cinder')} --os-auth-url {lay.auth_url} --os-username admin "
                        f"--os-project-name admin --os-user-domain-id default --os-project-domain-id default "
                        f'--os-password "$(cat {lay.keystone_dir / "admin.password"})" '
                        "--os-volume-api-version 3.70 list"
                    )
        elif args.command == "down":
            for line in down(lay, purge=args.purge):
                print(f"stopped {line}" if not line.startswith(("removed", "(")) else line)
        else:
            st = status(lay)
            print(json.dumps(st, indent=None if args.json else 2))
    except ZfsBackendError as e:
        print(f"cinder {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
