"""The demo: bring the default lab up and show snapshot replication as a backend activity.

Full replication node1 → node2, a change and an incremental one, a suspend/resume under a rate limit,
a cancel with rollback (the destination checked unchanged), then the activities' reports; then a hot
standby of a volume and a controlled failover (:mod:`.demo_standby`). It reaches
the nodes only through the lab's inventory and SSH, like a controller reaching real storage nodes.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from ..activity.handle import BackendActivity
from ..activity.report import ActivityRecord
from ..config import Settings
from ..hosts import SSHHost, load_inventory
from ..lab import Lab, parse_size
from ..replication import snapshot_replicate
from ..zfs import Zfs, parse_dataset, parse_snapshot
from .progress import follow, summary_line
from .render import human_bytes, human_duration, human_rate

__all__ = ["run_demo"]

FS = "tank/demo"


def _write(host: SSHHost, path: str, mib: int) -> None:
    host.run(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={mib}", "status=none"], timeout=600)


def _sums(host: SSHHost, mnt: str) -> str:
    return host.run(["sh", "-c", 'cd "$1" && sha256sum * | sha256sum', "demo", mnt]).text.split()[0]


def _listing(z: Zfs) -> list[str]:
    return [s.name.snap for s in z.list_snapshots(parse_dataset(FS))] if z.exists(parse_dataset(FS)) else []


def _wait_moving(act: BackendActivity, nbytes: int, timeout: float = 60.0) -> None:
    """Until the activity has moved ``nbytes`` (or ended, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = act.record()
        if rec.state not in ("pending", "running") or rec.progress.done >= nbytes:
            return
        time.sleep(0.1)


def run_demo(settings: Settings, size: str = "64M") -> int:
    con = Console(highlight=False)
    mib = max(1, parse_size(size) >> 20)
    lab = Lab(settings)
    con.rule("[bold]zfs_backend demo: snapshot replication as a backend activity")
    t0 = time.monotonic()
    created = lab.up(nodes=2, on_step=lambda m: con.print(f"  {m}"))
    con.print(
        f"lab {'up' if created else 'already up'} in {time.monotonic() - t0:.1f} s ({lab.layout.inventory})"
    )

    inv = load_inventory(settings=settings)
    src, dst = inv.connect("node1", settings), inv.connect("node2", settings)
    reports: list[tuple[str, ActivityRecord]] = []
    ok = True
    with src, dst:
        zsrc, zdst = Zfs(src), Zfs(dst)
        fs = parse_dataset(FS)
        for z in (zsrc, zdst):
            z.destroy(fs, recursive=True, missing_ok=True)

        def run(title: str, act: BackendActivity) -> ActivityRecord:
            con.print(f"[bold]{title}[/]  activity {act.id} on {act.node}")
            rec = follow(act, con, label=title.split(":")[0])
            con.print(f"  {summary_line(rec)}")
            reports.append((title.split(":")[0], rec))
            return rec

        # 1. full
        con.print(f"[bold]node1[/]: create {FS}, write {mib} MiB, snapshot @s1")
        zsrc.create(fs)
        mnt = zsrc.mountpoint(fs) or f"/{FS}"
        _write(src, f"{mnt}/base", mib)
        zsrc.snapshot(parse_snapshot(f"{FS}@s1"))
        rec = run(
            "full: node1:tank/demo@s1 → node2",
            snapshot_replicate(f"{FS}@s1", "node1", "node2", settings=settings),
        )
        ok &= rec.state == "succeeded" and _sums(src, mnt) == _sums(dst, mnt)

        # 2. a change, then incremental from the newest common snapshot (matched by GUID)
        change = max(1, mib // 8)
        con.print(f"[bold]node1[/]: write {change} MiB more, snapshot @s2")
        _write(src, f"{mnt}/change", change)
        zsrc.snapshot(parse_snapshot(f"{FS}@s2"))
        rec = run(
            "incremental: @s1 → @s2", snapshot_replicate(f"{FS}@s2", "node1", "node2", settings=settings)
        )
        ok &= rec.state == "succeeded" and _sums(src, mnt) == _sums(dst, mnt)
        con.print(f"  stream {human_bytes(rec.progress.done)} for {change} MiB changed")

        # 3. suspend / resume under a rate limit
        con.print(
            f"[bold]node1[/]: write {mib} MiB more, snapshot @s3; replicate at 16 MiB/s, suspend, resume"
        )
        _write(src, f"{mnt}/more", mib)
        zsrc.snapshot(parse_snapshot(f"{FS}@s3"))
        act = snapshot_replicate(f"{FS}@s3", "node1", "node2", bwlimit=16 << 20, settings=settings)
        _wait_moving(act, 8 << 20)
        act.suspend()
        n1 = act.progress[0]
        con.print(f"  suspended at {human_bytes(n1)}; waiting 2 s…")
        time.sleep(2.0)
        con.print(f"  after 2 s suspended: {human_bytes(act.progress[0] - n1)} moved")
        act.resume()
        rec = run("suspend/resume: @s2 → @s3", act)
        ok &= rec.state == "succeeded" and _sums(src, mnt) == _sums(dst, mnt)

        # 4. cancel with rollback: the destination must end exactly as before
        con.print(
            f"[bold]node1[/]: write {mib} MiB more, snapshot @s4; replicate at 8 MiB/s and cancel mid-way"
        )
        _write(src, f"{mnt}/doomed", mib)
        zsrc.snapshot(parse_snapshot(f"{FS}@s4"))
        before = (_listing(zdst), _sums(dst, mnt))
        act = snapshot_replicate(f"{FS}@s4", "node1", "node2", bwlimit=8 << 20, settings=settings)
        _wait_moving(act, 4 << 20)
        t_cancel = time.monotonic()
        act.cancel()
        act.wait(60)
        dt = time.monotonic() - t_cancel
        rec = act.record()
        reports.append(("cancel", rec))
        after = (_listing(zdst), _sums(dst, mnt))
        same = before == after
        ok &= rec.state == "cancelled" and same
        con.print(
            f"  {rec.state} after {human_bytes(rec.progress.done)} in {dt:.2f} s; node2 snapshots {after[0]} "
            f"and data {'[green]unchanged[/]' if same else '[red]CHANGED[/]'}"
        )

    t = Table(title="activity reports")
    for col in ("step", "state", "bytes", "elapsed", "rate", "cpu", "peak rss", "net sent"):
        t.add_column(col)
    for name, r in reports:
        res = r.resources
        t.add_row(
            name,
            r.state,
            human_bytes(r.progress.done),
            human_duration(res.elapsed_s),
            human_rate(r.progress.done / res.elapsed_s if res.elapsed_s else None),
            f"{res.cpu_s:.2f} s",
            human_bytes(res.peak_rss_bytes),
            human_bytes(res.net_bytes_sent),
        )
    con.print(t)
    from .demo_standby import run_standby_demo

    ok &= run_standby_demo(settings, lab, con)
    con.print(
        "[green]all steps verified (checksums, snapshots)[/]" if ok else "[red]a step did not verify[/]"
    )
    con.print(
        "the lab stays up to look around ([bold]zfs-backend lab status[/], [bold]zfs-backend top[/]); "
        f"take it down with: [bold].venv/bin/zfs-backend lab down[/] (state in {settings.home})"
    )
    return 0 if ok else 1
