"""The demo's hot-standby part: a volume written through NFS, a standby on node2 kept in sync by a
``standby-sync`` activity, its status, a controlled failover (TaskFlow flow) checked by reading the data
back from the new primary, then the standby removed and the volume deleted."""

from __future__ import annotations

import hashlib
import os
import time

from rich.console import Console

from ..config import Settings
from ..driver.service import VolumeService
from ..flows.env import FlowEnv, set_env
from ..flows.standby import standby_create, standby_failover, standby_remove, standby_status
from ..lab import Lab, nfs

__all__ = ["run_standby_demo"]


def _client(loc: str) -> nfs.NfsClient:
    addr, path = loc.split(":", 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            return nfs.NfsClient(addr, path)
        except nfs.NfsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_standby_demo(settings: Settings, lab: Lab, con: Console) -> bool:
    if not nfs.ganesha_available():
        con.print("[yellow]nfs-ganesha is not installed: the hot-standby part is skipped[/]")
        return True
    env = FlowEnv(settings)
    old = set_env(env)
    svc: VolumeService = env.service()
    name = f"demo-{int(time.time())}"
    ok = True
    try:
        con.rule("[bold]hot standby: a TaskFlow flow over a standby-sync activity")
        svc.create_volume(name, 1, "node1")
        loc = str(svc.get_volume(name).provider_location)
        svc.attach(name, {"ip": lab.layout.controller_address})
        data = os.urandom(4 << 20)
        with _client(loc) as c:
            c.pwrite("/volume", 0, data)
        con.print(f"volume {name} on node1, 4 MiB written through NFS ({loc})")
        t0 = time.monotonic()
        run = standby_create(settings, name, "node2", interval_s=2.0, max_lag_s=5.0)
        con.print(f"standby create: flow {run.id[:8]} {run.state.lower()} in {time.monotonic() - t0:.1f} s")
        ok &= run.state == "SUCCESS"
        more = os.urandom(1 << 20)
        with _client(loc) as c:
            c.pwrite("/volume", 4 << 20, more)
        time.sleep(3.0)
        [st] = standby_status(name)
        ls = st.get("last_sync") or {}
        con.print(
            f"standby on {st['standby']}: {st['state']}, lag {st['lag_s']:.1f} s, {st['syncs']} syncs, "
            f"last {ls.get('bytes', 0)} bytes in {ls.get('duration_s', 0):.2f} s"
        )
        t0 = time.monotonic()
        run = standby_failover(settings, name)
        took = time.monotonic() - t0
        ok &= run.state == "SUCCESS"
        rec = svc.get_volume(name)
        with _client(str(rec.provider_location)) as c:
            same = (
                hashlib.sha256(c.pread("/volume", 0, 5 << 20)).digest()
                == hashlib.sha256(data + more).digest()
            )
        ok &= same and rec.node == "node2"
        [st] = standby_status(name)
        con.print(
            f"controlled failover in {took:.1f} s: {name} now on {rec.node} ({rec.provider_location}), "
            f"standby {st['standby']}; data {'[green]identical[/]' if same else '[red]DIFFERS[/]'}"
        )
    finally:
        try:
            standby_remove(name)
            svc.detach(name)
            svc.delete_volume(name)
        except Exception as e:
            con.print(f"[yellow]cleanup of {name}: {e}[/]")
        set_env(old)
        env.close()
    return ok
