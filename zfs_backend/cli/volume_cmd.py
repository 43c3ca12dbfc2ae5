"""``zfs-backend volume ...`` and ``zfs-backend stats NODE``: the volume service from a terminal.
Rendering only; the work is in ``zfs_backend.driver.service``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ..activity.handle import BackendActivity
from ..config import Settings, load_settings
from ..driver.errors import InvalidSize
from ..driver.models import check_size
from ..driver.service import VolumeService
from ..errors import UsageError
from ..lab import Lab
from .progress import start_and_follow

__all__ = ["default_client", "parse_size_gib", "register"]

_SIZE = re.compile(r"^\s*(-?\d+)\s*(g|gb|gib)?\s*$", re.IGNORECASE)


def parse_size_gib(text: str) -> int:
    """``"2"``, ``"2G"``, ``"2GiB"`` -> 2 (whole GiB, as Cinder)."""
    m = _SIZE.match(text) if len(text) <= 40 else None
    if not m:
        shown = repr(text if len(text) <= 40 else text[:40] + "...")
        raise InvalidSize(f"invalid size {shown}: expected whole GiB, e.g. 1 or 10G")
    return check_size(int(m.group(1)))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("volume", help="volumes on the storage nodes (the Cinder-shaped ZFS/NFS driver)")
    vs = p.add_subparsers(dest="volume_command", metavar="ACTION", required=True)

    c = vs.add_parser("create", help="create a volume (a ZFS filesystem with a sparse file, NFS-exported)")
    c.add_argument("name")
    c.add_argument("--size", required=True, type=parse_size_gib, help="whole GiB, e.g. 1 or 10G")
    c.add_argument("--node", help="node to create it on (default: the origin's, for clones)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--from-snapshot", metavar="VOL@SNAP", help="a clone of a snapshot")
    g.add_argument("--source", metavar="VOL", help="a clone of a volume")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_create)

    ls = vs.add_parser("list", help="list volumes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    sh = vs.add_parser("show", help="show one volume and its snapshots")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)

    d = vs.add_parser("delete", help="delete a volume (refused while it has snapshots or is attached)")
    d.add_argument("name")
    d.set_defaults(func=_delete)

    e = vs.add_parser("extend", help="grow a volume")
    e.add_argument("name")
    e.add_argument("--size", required=True, type=parse_size_gib, help="new size, whole GiB")
    e.set_defaults(func=_extend)

    s = vs.add_parser("snapshot", help="snapshot a volume")
    s.add_argument("volume")
    s.add_argument("snapname")
    s.set_defaults(func=_snapshot)

    sd = vs.add_parser("snapshot-delete", help="delete a snapshot (refused while volumes are cloned from it)")
    sd.add_argument("snapshot", metavar="VOL@SNAP")
    sd.set_defaults(func=_snapshot_delete)

    a = vs.add_parser(
        "attach", help="export the volume, grant a client access and print the NFS connection info"
    )
    a.add_argument("name")
    a.add_argument(
        "--client",
        metavar="IP",
        help="address of the host that mounts it (default on the lab: the controller's bridge address)",
    )
    a.add_argument(
        "--attachment",
        metavar="ID",
        help="this attachment's id (default: client-IP, one per client); a host with two attachments "
        "keeps access until both are detached",
    )
    a.set_defaults(func=_attach)

    dt = vs.add_parser(
        "detach", help="end an attachment; a client loses access with its last one (the export stays)"
    )
    dt.add_argument("name")
    dt.add_argument("--client", metavar="IP", help="end every attachment of this client")
    dt.add_argument("--attachment", metavar="ID", help="end this attachment only")
    dt.set_defaults(func=_detach)

    r = vs.add_parser("replicate", help="replicate a volume's snapshot to another node (a backend activity)")
    r.add_argument("snapshot", metavar="VOL@SNAP")
    r.add_argument("--to", required=True, metavar="NODE")
    r.add_argument("--full", action="store_true", help="full stream (force_full_copy)")
    r.add_argument("--detach", action="store_true", help="print the activity id and return")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_replicate)

    from .volume_jobs_cmd import register_jobs

    register_jobs(vs)

    st = sub.add_parser("stats", help="a node's volume stats and capabilities (get_volume_stats)")
    st.add_argument("node")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_stats)


def _service() -> VolumeService:
    return VolumeService(load_settings())


def _split(text: str) -> tuple[str, str]:
    vol, sep, snap = text.partition("@")
    if not sep or not vol or not snap:
        raise UsageError(f"expected VOL@SNAP, got {text!r}")
    return vol, snap


def _dump(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _volume_table(rows: list[dict[str, Any]]) -> Table:
    t = Table()
    for col in ("name", "node", "size", "status", "provider_location", "id"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["node"], f"{r['size']} GiB", r["status"], r["provider_location"] or "-", r["id"]
        )
    return t


def _create(args: argparse.Namespace) -> int:
    with _service() as svc:
        rec = svc.create_volume(
            args.name,
            args.size,
            args.node,
            snapshot=_split(args.from_snapshot) if args.from_snapshot else None,
            source=args.source,
        )
    if args.json:
        _dump(rec.to_dict())
    else:
        print(f"created {rec.name} ({rec.size} GiB) on {rec.node}: {rec.provider_location}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _service() as svc:
        rows = [r.to_dict() for r in svc.list_volumes()]
    if args.json:
        _dump(rows)
    else:
        Console().print(_volume_table(rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _service() as svc:
        rec = svc.get_volume(args.name).to_dict()
        rec["snapshots"] = [s.to_dict() for s in svc.list_snapshots(args.name)]
    if args.json:
        _dump(rec)
    else:
        for k, v in rec.items():
            if k != "snapshots":
                print(f"{k:18} {v}")
        print("snapshots          " + (", ".join(s["name"] for s in rec["snapshots"]) or "-"))
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _service() as svc:
        svc.delete_volume(args.name)
    print(f"deleted {args.name}")
    return 0


def _extend(args: argparse.Namespace) -> int:
    with _service() as svc:
        rec = svc.extend_volume(args.name, args.size)
    print(f"extended {rec.name} to {rec.size} GiB")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    with _service() as svc:
        snap = svc.create_snapshot(args.volume, args.snapname)
    print(f"created snapshot {args.volume}@{snap.name} ({snap.id})")
    return 0


def _snapshot_delete(args: argparse.Namespace) -> int:
    with _service() as svc:
        svc.delete_snapshot(*_split(args.snapshot))
    print(f"deleted snapshot {args.snapshot}")
    return 0


def default_client(settings: Settings) -> str:
    """The client ``volume attach`` grants without ``--client``: on the lab (its inventory in use), the
    controller's address on the lab's bridge; elsewhere there is no sensible guess."""
    lab = Lab(settings)
    if lab.is_up() and settings.inventory == lab.layout.inventory:
        return lab.layout.controller_address
    raise UsageError("give --client IP: the address of the host that will mount the volume")


def _attach(args: argparse.Namespace) -> int:
    settings = load_settings()
    client = args.client if args.client is not None else default_client(settings)
    with VolumeService(settings) as svc:
        info = svc.attach(args.name, {"ip": client}, attachment=args.attachment)
    _dump(info)
    return 0


def _detach(args: argparse.Namespace) -> int:
    with _service() as svc:
        connector = None if args.client is None else {"ip": args.client}
        clients = svc.detach(args.name, connector, attachment=args.attachment)
    print(f"detached {args.name} from {', '.join(clients) or 'no client'}")
    return 0


def _replicate(args: argparse.Namespace) -> int:
    vol, snap = _split(args.snapshot)

    def start() -> BackendActivity:
        with _service() as svc:
            return svc.replicate(vol, snap, args.to, args.full)

    # Ctrl-C while the agents grant and start it is noted, and cancels it as soon as it is followed
    label = f"{args.snapshot} → {args.to}"
    return start_and_follow(start, label=label, as_json=args.json, detach=args.detach)


def _stats(args: argparse.Namespace) -> int:
    with _service() as svc:
        stats = svc.stats(args.node)
    if args.json:
        _dump(stats)
    else:
        t = Table(title=f"{args.node}: get_volume_stats")
        t.add_column("key")
        t.add_column("value")
        for k in sorted(stats):
            t.add_row(k, json.dumps(stats[k]) if not isinstance(stats[k], str) else stats[k])
        Console().print(t)
    return 0
