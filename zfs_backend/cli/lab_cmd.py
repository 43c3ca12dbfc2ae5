"""``zfs-backend lab ...``: bring the simulated lab up and down, inspect it, and act on its nodes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from ..config import load_settings
from ..errors import UsageError
from ..lab import Lab
from ..lab.services import SERVICES
from ..lab.topology import MAX_NODES, parse_size
from .numbers import whole
from .render import human_bytes, parse_rate

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "lab",
        help="the simulated lab of storage nodes",
        description=(
            "Storage nodes simulated on this machine: each node has its own network namespace, hostname "
            "and root filesystem (an overlay over /), its own zfs-fuse daemon with pool 'tank', its own "
            "OpenSSH server and node agent. Needs root."
        ),
    )
    s = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    up = s.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument(
        "--nodes",
        type=whole("--nodes", 1, MAX_NODES),
        default=2,
        help="number of nodes (default 2: node1, node2)",
    )
    up.add_argument(
        "--pool-size", type=parse_size, default="1G", help="size of each node's sparse pool file (default 1G)"
    )
    up.add_argument("--network", help="IPv4 network of the lab (default 198.18.0.0/24)")
    up.add_argument("--no-agent", action="store_true", help="do not start the node agents")
    up.add_argument(
        "--test-kinds",
        action="store_true",
        help="agents also host the generic 'pipeline' activity kind (for tests and benchmarks)",
    )
    up.add_argument(
        "--provision",
        action="store_true",
        help="bare nodes (network, root filesystem, sshd, keys), then everything else deployed by "
        "ansible/site.yml through the lab's inventory, as on real nodes",
    )
    up.add_argument("--json", action="store_true", help="print the lab status as JSON")
    up.set_defaults(func=cmd_up)

    st = s.add_parser("status", help="nodes, addresses, pools, daemons")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    ex = s.add_parser("exec", help="run a command inside a node (stdin/stdout/exit code passed through)")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    ex.set_defaults(func=cmd_exec)

    sh = s.add_parser("shape", help="rate-limit a node's link (tbf), or --clear it")
    sh.add_argument("node")
    g = sh.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", help="e.g. 100mbit, 20MB/s, 5M (bytes/s unless it ends in bit)")
    g.add_argument("--clear", action="store_true", help="remove the limit")
    sh.set_defaults(func=cmd_shape)

    ln = s.add_parser("link", help="cut or restore a node's link (fault tests)")
    ln.add_argument("node")
    ln.add_argument("state", choices=["up", "down"])
    ln.set_defaults(func=cmd_link)

    rs = s.add_parser("restart", help="restart a daemon of a node (SIGKILL with --kill): fault tests")
    rs.add_argument("node")
    rs.add_argument("service", choices=SERVICES)
    rs.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    rs.set_defaults(func=cmd_restart)

    dn = s.add_parser("down", help="stop and remove everything the lab made (idempotent)")
    dn.set_defaults(func=cmd_down)


def _lab(args: argparse.Namespace) -> Lab:
    return Lab(load_settings(), network=getattr(args, "network", None))


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def cmd_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    con = _err()
    t0 = time.monotonic()
    created = lab.up(
        nodes=args.nodes,
        pool_size=args.pool_size,
        on_step=lambda m: con.print(f"  {m}"),
        with_agent=not args.no_agent,
        test_kinds=args.test_kinds,
        provision=args.provision,
    )
    if not args.json:
        if created:
            con.print(f"lab up: {args.nodes} nodes in {time.monotonic() - t0:.1f} s")
        else:
            con.print("lab already up")
        con.print(f"inventory: {lab.layout.inventory}\nssh config: {lab.layout.ssh_config}")
    return _print_status(lab, args.json)


def _print_status(lab: Lab, as_json: bool) -> int:
    statuses = lab.status()
    if as_json:
        doc = {
            "up": lab.is_up(),
            "network": str(lab.layout.network),
            "controller": lab.layout.controller_address,
            "inventory": str(lab.layout.inventory),
            "nodes": [s.to_dict() for s in statuses],
        }
        print(json.dumps(doc, indent=2))
        return 0
    if not statuses:
        Console().print("the lab is down")
        return 0
    t = Table(title=f"lab {lab.layout.network} (controller {lab.layout.controller_address})")
    for col in ("node", "address", "link", "pool size", "pool used", *SERVICES):
        t.add_column(col)
    for s in statuses:
        link = "up" if s.link_up else "[red]down[/]"
        if s.shaped_bps:
            link += f" ({s.shaped_bps / 1e6:.0f} Mbit/s)"
        t.add_row(
            s.name,
            s.address,
            link,
            human_bytes(s.pool_size),
            human_bytes(s.pool_used),
            *("[green]alive[/]" if s.services.get(x) else "[red]dead[/]" for x in SERVICES),
        )
    Console().print(t)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return _print_status(_lab(args), args.json)


def cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("give a command after --, e.g. `zfs-backend lab exec node1 -- zfs list`")
    full = _lab(args).exec_argv(args.node, argv)
    sys.stdout.flush()
    return subprocess.call(full, env=dict(os.environ))


def cmd_shape(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if args.clear:
        lab.shape(args.node, None)
        print(f"{args.node}: link unshaped")
    else:
        bps = parse_rate(args.rate)
        lab.shape(args.node, bps)
        print(f"{args.node}: link limited to {bps / 1e6:g} Mbit/s each way")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    _lab(args).link(args.node, args.state == "up")
    print(f"{args.node}: link {args.state}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    _lab(args).restart_service(args.node, args.service, hard=args.kill)
    print(f"{args.node}: {args.service} restarted")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    done = _lab(args).down()
    print("lab down" + (f" ({len(done)} steps)" if done else ": nothing was up"))
    return 0
