"""``zfs-backend volume migrate|backup|backup-list|restore``: the volume service's long jobs, each a backend
activity, from a terminal. Rendering only; the work is in ``zfs_backend.driver.volume_jobs``.

In the foreground a progress bar follows the activity (Ctrl-C cancels it, with rollback); then the
controller's part runs (a migration's export switch, a restored volume's export). A migration needs its
controller while it runs too: it stops before its quiesce for the source to be unexported, which this
command does while it follows (``driver.migration.Switch.at_hold``). ``--detach``: a migration or a
restore goes on in a detached ``zfs-backend`` process of its own (log under ``$ZFS_BACKEND_HOME/logs``)
that does the controller's part, at the hold and at the end; this command prints the activity id as
soon as it runs and returns. A detached backup needs no controller part: ``backup-list`` records
its end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ..activity.handle import BackendActivity
from ..config import load_settings
from ..driver import volume_jobs as jobs
from ..driver.migration import MigrationFailed
from ..driver.service import VolumeService
from ..errors import UsageError
from ..private import private_dir, private_open
from .numbers import whole
from .progress import EXIT_CANCELLED, OnRecord, run_in_foreground, wait_quietly
from .render import human_bytes
from .sigint import Deferral, deferred

__all__ = ["register_jobs"]


def register_jobs(vs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    m = vs.add_parser("migrate", help="move a volume to another node while it stays in use (an activity)")
    m.add_argument("name")
    m.add_argument("--to", required=True, metavar="NODE")
    m.add_argument("--hold-at", choices=("catchup", "quiesce"), help="suspend itself before that phase")
    _common(m, _migrate)

    b = vs.add_parser("backup", help="back a volume up to a backup node (an activity; in-use volumes too)")
    b.add_argument("name")
    b.add_argument("--incremental", action="store_true", help="from the newest backup of the volume")
    b.add_argument("--backup-node", metavar="NODE", help="default: inventory var zfs_backend_backup_node")
    _common(b, _backup)

    bl = vs.add_parser("backup-list", help="list backups")
    bl.add_argument("volume", nargs="?")
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=_backup_list)

    r = vs.add_parser("restore", help="restore a backup into a new volume (checksums verified first)")
    r.add_argument("backup", metavar="BACKUP_ID")
    r.add_argument("--to", metavar="NEW_VOL", help="name of the new volume (default restore-<backup id>)")
    r.add_argument("--node", help="node of the new volume (default: the backed-up volume's)")
    _common(r, _restore)


def _common(p: argparse.ArgumentParser, func: Any) -> None:
    p.add_argument("--detach", action="store_true", help="print the activity id and return")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--report-fd", type=whole("--report-fd", 0, 1 << 20), help=argparse.SUPPRESS
    )  # a detached child's line to its parent
    p.set_defaults(func=func)


def _detach_child(args: argparse.Namespace, what: str) -> int:
    """Run this same command in a detached process; print the activity id it reports, and return."""
    settings = load_settings()
    logs = settings.home / "logs"
    private_dir(logs)
    log_fd = private_open(logs / f"{what}-{os.getpid()}.log", os.O_WRONLY | os.O_APPEND)
    r, w = os.pipe()
    argv = [a for a in sys.argv[1:] if a != "--detach"]
    child = subprocess.Popen(
        [sys.executable, "-m", "zfs_backend.cli.main", *argv, "--report-fd", str(w)],
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        pass_fds=(w,),
        start_new_session=True,
    )
    os.close(w)
    os.close(log_fd)
    with os.fdopen(r) as f:
        line = f.read().strip()
    if not line.startswith("act-"):
        rc = child.wait()
        print(f"zfs-backend: error: {line or 'the detached job ended at once'}", file=sys.stderr)
        return rc or 1
    print(json.dumps({"id": line, "pid": child.pid}) if args.json else line)
    return 0


def _report(args: argparse.Namespace, act: BackendActivity) -> None:
    if args.report_fd is not None:
        os.write(args.report_fd, act.id.encode() + b"\n")
        os.close(args.report_fd)
        args.report_fd = None


def _follow(
    args: argparse.Namespace,
    act: BackendActivity,
    label: str,
    on_record: OnRecord | None = None,
    *,
    sigint: Deferral | None = None,
) -> int:
    """A detached child only waits (its parent printed the id); a terminal gets the progress bar. Both
    hand every record to ``on_record`` (the controller's part while the activity runs). ``sigint``: Ctrl-C
    was deferred while the activity started (``cli.sigint``): on a terminal it cancels the activity, now
    or when it comes. A detached child (its own session: no terminal's Ctrl-C reaches it) keeps a SIGINT
    noted and does its part to the end (``zfs-backend activity cancel`` stops it, with rollback): a
    KeyboardInterrupt inside the flow would stop it between tasks, neither reverted nor done."""
    see = on_record or (lambda rec: None)
    if args.report_fd is not None:
        _report(args, act)
        rec = wait_quietly(act, on_record=see)
        return 0 if rec.state == "succeeded" else (rec.status or 1)
    return run_in_foreground(act, label=label, as_json=False, detach=False, on_record=see, sigint=sigint)


def _run_job(args: argparse.Namespace, what: str, body: Any, *, child: bool = True) -> int:
    if child and args.detach and args.report_fd is None:
        return _detach_child(args, what)
    with VolumeService(load_settings()) as svc:
        try:
            return int(body(svc))
        except Exception as e:
            if args.report_fd is not None:
                os.write(args.report_fd, f"{e}\n".encode())
                os.close(args.report_fd)
                args.report_fd = None
            raise


def _migrate(args: argparse.Namespace) -> int:
    def body(svc: VolumeService) -> int:
        from ..flows.migrate import failed, migrate

        tuning = {"hold_at": args.hold_at} if args.hold_at else {}
        seen: dict[str, Any] = {}

        def follow(act: BackendActivity, at_hold: OnRecord) -> None:
            # this command is the migration's controller: the flow hands it the activity to follow; at
            # the hold before the quiesce ``at_hold`` unexports the source and resumes the activity. A
            # Ctrl-C before this point cancels it here, as one while it is followed does.
            seen["act"] = act
            seen["rc"] = _follow(args, act, f"migrate {args.name} → {args.to}", at_hold, sigint=sigint)

        with deferred() as sigint:
            run = migrate(svc.settings, args.name, args.to, follow=follow, **tuning)
        if run.state != "SUCCESS":  # reverted: the source exported again as it was
            if seen.get("rc") == EXIT_CANCELLED:
                return EXIT_CANCELLED
            if sigint.pending and "act" not in seen:
                print(f"interrupted: {args.name} stays where it was")
                return EXIT_CANCELLED
            raise failed(run) if "act" in seen else MigrationFailed(run.error or "did not start")
        update = run.results["update"]
        if args.json:
            act = seen.get("act")
            print(json.dumps({"flow": run.id, "activity": act.to_dict() if act else None, **update}))
        else:
            q = update.get("quiesce_s")
            print(
                f"migrated {args.name} to {args.to}: {update['provider_location']}"
                + (f" (quiesced {q:.2f} s)" if q is not None else "")
            )
        return 0

    return _run_job(args, "migrate", body)


def _backup(args: argparse.Namespace) -> int:
    def body(svc: VolumeService) -> int:
        with deferred() as sigint:  # a Ctrl-C while it starts cancels it as soon as it is followed
            rec, act = jobs.start_backup(
                svc, args.name, incremental=args.incremental, backup_node=args.backup_node
            )
            if args.detach and not sigint.pending:
                print(json.dumps({"backup": rec.id, "id": act.id}) if args.json else f"{rec.id} {act.id}")
                return 0
            label = f"backup {args.name} → {rec.backup_node}"
            rc = run_in_foreground(act, label=label, as_json=False, detach=False, sigint=sigint)
            done = jobs.finish_backup(svc, rec.id, act)
        if args.json:
            print(json.dumps(done.to_dict()))
        elif done.status == "available":
            print(
                f"backup {done.id} of {args.name}: {human_bytes(done.stream_bytes)} on {done.backup_node}"
                f"{' (incremental)' if done.incremental else ''}"
            )
        return rc

    return _run_job(args, "backup", body, child=False)  # detached: backup-list records its end


def _backup_list(args: argparse.Namespace) -> int:
    with VolumeService(load_settings()) as svc:
        rows = [b.to_dict() for b in jobs.list_backups(svc, args.volume)]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    t = Table()
    for col in ("id", "volume", "type", "status", "size", "stream", "backup node", "sha256"):
        t.add_column(col)
    for b in rows:
        t.add_row(
            b["id"],
            b["volume_name"],
            "incremental" if b["incremental"] else "full",
            b["status"],
            f"{b['size']} GiB",
            human_bytes(b["stream_bytes"]),
            b["backup_node"],
            (b["sha256"] or "-")[:16],
        )
    Console().print(t)
    return 0


def _restore(args: argparse.Namespace) -> int:
    def body(svc: VolumeService) -> int:
        with deferred() as sigint:  # a Ctrl-C while it starts cancels it as soon as it is followed
            name, act = jobs.start_restore(svc, args.backup, to=args.to, node=args.node)
            rc = _follow(args, act, f"restore {args.backup} → {name}", sigint=sigint)
            if act.state != "succeeded":
                jobs.finish_restore(svc, name, act)  # raises the one-line error, drops the record
                return rc or 1
            rec = jobs.finish_restore(svc, name, act)
        if args.json:
            print(json.dumps(rec.to_dict()))
        else:
            print(f"restored {args.backup} into {rec.name} on {rec.node}: {rec.provider_location}")
        return 0

    if args.to is not None and not args.to:
        raise UsageError("--to needs a name")
    return _run_job(args, "restore", body)
