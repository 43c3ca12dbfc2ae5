"""Flows survive their controller: ``zfs-backend standby create`` SIGKILLed in the middle of the seed and
resumed from the logbook (``flow resume``), and two ``zfs-backend conductor`` processes on a Redis
jobboard, the one holding the standby-create job SIGKILLed: the other claims it and finishes it. Both
times the seed is transferred once: one ``replicate`` activity, never a second transfer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import until

from zfs_backend.config import Settings
from zfs_backend.flows import standby as sb
from zfs_backend.flows.env import FlowEnv, set_env
from zfs_backend.flows.redis_server import RedisServer
from zfs_backend.flows.runs import list_flows
from zfs_backend.lab import Lab, nfs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from standby_helpers import cleanup, flow_env, new_volume

pytestmark = pytest.mark.skipif(
    not nfs.ganesha_available(), reason="nfs-ganesha is not installed (scripts/bootstrap installs it)"
)
ZB = str(Path(sys.executable).with_name("zfs-backend"))


@pytest.fixture
def env(lab: Lab, lab_settings: Settings) -> Iterator[FlowEnv]:
    e = flow_env(lab_settings)
    old = set_env(e)
    yield e
    set_env(old)
    e.close()


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ZFS_BACKEND_HOME": str(settings.home),
        "ZFS_BACKEND_LAB_NETWORK": settings.lab_network,
        **extra,
    }


def fill(e: FlowEnv, volume: str, mib: int) -> None:
    """``mib`` MiB of random data in the volume's file (written on its node: the seed has work to do)."""
    d = e.driver(e.service().get_volume(volume).node)
    mnt = d.zfs.mountpoint(d.dataset_of(e.service().get_volume(volume).model()))
    d.zfs.host.run(
        ["dd", "if=/dev/urandom", f"of={mnt}/volume", "bs=1M", f"count={mib}", "conv=notrunc", "status=none"],
        timeout=300,
    )


def seed_started(settings: Settings, volume: str) -> dict[str, Any] | None:
    """The standby-create flow of ``volume`` once its seed replication was started and saved."""
    for f in list_flows(settings):
        if f["store"].get("volume") != volume:
            continue
        start = next((a for a in f["atoms"] if a["name"] == "seed.start"), None)
        if start is not None and start["state"] == "SUCCESS":
            return f
    return None


def replications_into(e: FlowEnv, node: str, dataset: str) -> list[Any]:
    return [
        a.record()
        for a in e.agent(node).list()
        if a.kind == "replicate" and a.record().params.get("destination") == dataset
    ]


@pytest.fixture
def slow_link(lab: Lab) -> Iterator[None]:
    lab.shape("node1", 4 * 8 << 20)  # 4 MiB/s: a 32 MiB seed takes seconds
    yield
    lab.shape("node1", None)


def test_controller_sigkill_mid_seed_then_resume(
    env: FlowEnv, lab: Lab, lab_settings: Settings, slow_link: None
) -> None:
    vol = new_volume(env, "node1", lab.layout.controller_address)
    model = env.service().get_volume(vol).model()
    dest = str(env.driver("node2").dataset_of(model))
    try:
        fill(env, vol, 32)
        proc = subprocess.Popen(
            [ZB, "standby", "create", vol, "--standby", "node2", "--interval", "2"],
            env=cli_env(lab_settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        flow = until("the seed to start", lambda: seed_started(lab_settings, vol), 120)
        [rec] = replications_into(env, "node1", dest)
        assert rec.state == "running"
        proc.send_signal(signal.SIGKILL)  # the controller dies mid-seed
        proc.wait(30)
        [f] = [x for x in list_flows(lab_settings) if x["id"] == flow["id"]]
        assert f["state"] == "RUNNING"
        r = subprocess.run(
            [ZB, "flow", "resume", flow["id"], "--json"],
            env=cli_env(lab_settings),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        # one transfer: the resumed flow re-attached to the same replicate activity
        [rec2] = replications_into(env, "node1", dest)
        assert rec2.id == rec.id and rec2.state == "succeeded"
        [st] = sb.standby_status(vol)
        assert st["state"] == "running" and st["standby"] == "node2"
        [f] = [x for x in list_flows(lab_settings) if x["id"] == flow["id"]]
        assert f["state"] == "SUCCESS"
    finally:
        cleanup(env, vol, ["node1", "node2"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_conductor_takeover_on_redis(env: FlowEnv, lab: Lab, lab_settings: Settings, slow_link: None) -> None:
    from zfs_backend.flows.jobboard import jobboard
    from zfs_backend.flows.persistence import backend

    redis = RedisServer(lab_settings.home / "redis-test", free_port())
    url = redis.start()
    board_settings = Settings(
        **{**lab_settings.__dict__, "jobboard": url, "jobboard_password": redis.password_file}
    )
    board_env = {"ZFS_BACKEND_JOBBOARD": url, "ZFS_BACKEND_JOBBOARD_PASSWORD_FILE": str(redis.password_file)}
    conductors: dict[str, subprocess.Popen[bytes]] = {}
    vol = new_volume(env, "node1", lab.layout.controller_address)
    dest = str(env.driver("node2").dataset_of(env.service().get_volume(vol).model()))
    poster = None
    try:
        fill(env, vol, 32)
        for name in ("c1", "c2"):
            conductors[name] = subprocess.Popen(
                [ZB, "conductor", "--name", name, "--claim-expiry", "4"],
                env=cli_env(lab_settings, **board_env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        poster = subprocess.Popen(
            [ZB, "standby", "create", vol, "--standby", "node2", "--interval", "2", "--json"],
            env=cli_env(lab_settings, **board_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        until("a conductor to start the seed", lambda: seed_started(lab_settings, vol), 120)

        def owner() -> str | None:
            with backend(board_settings) as be, jobboard(board_settings, be) as board:
                for job in board.iterjobs(ensure_fresh=True):
                    who = board.find_owner(job)
                    if who:
                        return str(who)
            return None

        holder = until("the job's owner", owner, 60)
        assert holder in conductors
        [rec] = replications_into(env, "node1", dest)
        assert rec.state == "running"
        conductors[holder].send_signal(signal.SIGKILL)  # the conductor holding the job dies mid-seed
        conductors[holder].wait(30)
        out, err = poster.communicate(timeout=600)
        assert poster.returncode == 0, err.decode()
        assert b'"state": "SUCCESS"' in out
        # the other conductor finished it, with the seed transferred once
        [rec2] = replications_into(env, "node1", dest)
        assert rec2.id == rec.id and rec2.state == "succeeded"
        [st] = sb.standby_status(vol)
        assert st["state"] == "running"
    finally:
        for p in [*conductors.values(), *([poster] if poster else [])]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        redis.stop()
        shutil.rmtree(redis.dir, ignore_errors=True)
        cleanup(env, vol, ["node1", "node2"])
