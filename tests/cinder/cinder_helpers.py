"""The test side of the small Cinder: its client (python-cinderclient in ``.venv-cinder``, through
``cinder_client.py``), the ``cinder`` command line, waits on Cinder's asynchronous states, and what the
lab nodes hold (datasets and exports) to compare before and after."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import polling
from polling import NotYet, eventually

from zfs_backend.cinderlab.config import CINDER_PARENT, HOST, PROJECT_ID, CinderLayout
from zfs_backend.driver.nfs import parse_exports
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab, nfs

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("cinder_client.py")
# node1's backend has node2 as its replication_device (Cinder's replication v2.1), for the failover
# scenario of test_cinder_2_migrate_failover.py; the other backends have none
STANDBY = "node2"
TIMEOUT = 300.0  # generous: a loaded 2-core machine; never a timed assertion, only a bound on waiting


class CinderError(Exception):
    """cinder-api refused a request: cinderclient's exception type, HTTP code and Cinder's message."""

    def __init__(self, kind: str, code: int | None, message: str) -> None:
        super().__init__(f"{kind} ({code}): {message}")
        self.kind, self.code, self.message = kind, code, message


class Cinder:
    """One long-lived python-cinderclient process (API microversion 3.70, the admin: keystone's, or
    noauth's when cinder-up ran with ``--auth noauth``)."""

    def __init__(self, lay: CinderLayout) -> None:
        self.lay = lay
        self.proc = subprocess.Popen(
            [str(lay.bin("python")), str(CLIENT), lay.endpoint, PROJECT_ID],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", **auth_env(lay)},
        )

    def call(self, what: str, *args: Any, then: tuple[str, Any] | None = None, **kwargs: Any) -> Any:
        """``client.<what>(*args, **kwargs)``; ``then=(method, arg)``: then ``<result>.method(arg)``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"call": what, "args": args, "kwargs": kwargs, "then": then}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cinder client exited ({self.proc.wait(timeout=30)})")
        out = json.loads(line)
        if "error" in out:
            e = out["error"]
            message = e["message"]
            if e["code"] and int(e["code"]) >= 500:  # the server's own words: what CI keeps of it
                message += "\n" + self.server_errors()
            raise CinderError(e["type"], e["code"], message)
        return out["result"]

    def server_errors(self, lines: int = 30) -> str:
        """The last ERROR lines (and their tracebacks) of cinder-api's and cinder-volume's logs."""
        out = []
        for name in ("cinder-api.log", "cinder-volume.log", "cinder-scheduler.log"):
            try:
                text = (self.lay.log_dir / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            keep = [ln for ln in text if " ERROR " in ln or " WARNING " in ln]
            out.append(f"--- {name}\n" + "\n".join(keep[-lines:]))
        return "\n".join(out)

    def volume(self, vid: str) -> dict[str, Any]:
        return dict(self.call("volumes.get", vid))

    def snapshot(self, sid: str) -> dict[str, Any]:
        return dict(self.call("volume_snapshots.get", sid))

    def wait_volume(self, vid: str, *states: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The volume once its status is one of ``states`` (fails at once on an unexpected error state)."""
        return self._wait(lambda: self.volume(vid), states, f"volume {vid}", timeout)

    def wait_snapshot(self, sid: str, *states: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self._wait(lambda: self.snapshot(sid), states, f"snapshot {sid}", timeout)

    def _wait(
        self, get: Callable[[], dict[str, Any]], states: tuple[str, ...], what: str, timeout: float
    ) -> dict[str, Any]:

        def settled() -> dict[str, Any]:
            obj = get()
            if obj["status"] in states:
                return obj
            if obj["status"].startswith("error") and not any(s.startswith("error") for s in states):
                raise AssertionError(f"{what} is {obj['status']}, wanted {states}: {self.messages()}")
            raise NotYet(f"{what} still {obj['status']} after {timeout:.0f} s, wanted {states}")

        return eventually(settled, timeout, interval=1.0, retry=NotYet)

    def wait_gone(self, kind: str, oid: str, timeout: float = TIMEOUT) -> None:
        """Until ``volumes.get`` / ``volume_snapshots.get`` answers 404."""

        def gone() -> None:
            try:
                obj = self.call(f"{kind}.get", oid)
            except CinderError as e:
                if e.code == 404:
                    return
                raise
            if obj["status"].startswith("error"):
                raise AssertionError(f"{kind} {oid} is {obj['status']}: {self.messages()}")
            raise NotYet(f"{kind} {oid} still {obj['status']} after {timeout:.0f} s")

        eventually(gone, timeout, interval=1.0, retry=NotYet)

    def messages(self) -> list[str]:
        """Cinder's user messages (``cinder message-list``), newest first."""
        try:
            return [f"{m['resource_uuid']}: {m['user_message']}" for m in self.call("messages.list")]
        except CinderError:
            return []

    def pools(self) -> dict[str, dict[str, Any]]:
        """The scheduler's pools by backend name, with the capabilities the drivers published."""
        out = {}
        for p in self.call("pools.list", detailed=True):
            out[p["name"].split("@", 1)[1].split("#", 1)[0]] = p["capabilities"]
        return out

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def auth_env(lay: CinderLayout) -> dict[str, str]:
    """The admin's ``OS_*`` variables when cinder-api runs behind keystone (``credentials.json``), else
    none (noauth)."""
    try:
        creds = json.loads(lay.credentials.read_text())
    except FileNotFoundError:
        return {}
    admin = creds["accounts"]["admin"]
    return {
        "OS_AUTH_URL": creds["auth_url"],
        "OS_USERNAME": admin["username"],
        "OS_PASSWORD": admin["password"],
        "OS_PROJECT_NAME": admin["project_name"],
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_DOMAIN_ID": "default",
        "OS_REGION_NAME": creds["region"],
    }


def cli(lay: CinderLayout, *argv: str) -> subprocess.CompletedProcess[str]:
    """The ``cinder`` command line as an operator types it (authenticated by keystone through the
    ``OS_*`` variables, or noauth), exit code and output as they are."""
    auth = auth_env(lay)
    base = [str(lay.bin("cinder"))]
    if not auth:
        base += ["--os-auth-type", "noauth", "--os-user-id", "admin", "--os-project-id", PROJECT_ID]
        base += ["--os-endpoint", lay.endpoint]
    base += ["--os-volume-api-version", "3.70"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **auth}
    return subprocess.run([*base, *argv], capture_output=True, text=True, timeout=120, env=env, check=False)


def node_state(nodes: dict[str, SSHHost]) -> dict[str, Any]:
    """Every node's datasets and snapshots under the pool, and its exports with their grants."""
    out: dict[str, Any] = {}
    for name, host in sorted(nodes.items()):
        ds = host.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", "tank"]).text.split()
        exports_text = host.run(["cat", DEFAULT_EXPORTS_FILE], check=False).text
        exports = {str(k): sorted(v.clients) for k, v in parse_exports(exports_text)[0].items()}
        out[name] = {"datasets": sorted(ds), "exports": exports}
    return out


def cinder_datasets(nodes: dict[str, SSHHost]) -> dict[str, list[str]]:
    """Each node's datasets and snapshots under Cinder's parent (the parent itself left out)."""
    out = {}
    for name, host in sorted(nodes.items()):
        r = host.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", CINDER_PARENT], check=False)
        out[name] = sorted(n for n in r.text.split() if n != CINDER_PARENT)
    return out


def mount(conn: dict[str, Any]) -> nfs.NfsClient:
    """An NFSv3 mount (libnfs, from the controller's address) of what ``os-initialize_connection`` said."""
    addr, path = conn["data"]["export"].split(":", 1)
    return eventually(lambda: nfs.NfsClient(addr, path), 30.0)  # a grant reaches ganesha after its SIGHUP


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def until(what: str, fn: Callable[[], T | None], timeout: float = TIMEOUT, interval: float = 1.0) -> T:
    """:func:`polling.until` with the services' patience (``TIMEOUT``, asked once a second)."""
    return polling.until(what, fn, timeout, interval=interval)


def backend_of(vol: dict[str, Any]) -> str:
    """``zfs-node2`` from ``os-vol-host-attr:host`` ``zfs-backend-cinder@zfs-node2#zfs-node2``."""
    host = vol["os-vol-host-attr:host"]
    assert host.startswith(f"{HOST}@"), host
    return str(host.split("@", 1)[1].split("#", 1)[0])


def node_of(vol: dict[str, Any]) -> str:
    return backend_of(vol).removeprefix("zfs-")


def connector(lab: Lab) -> dict[str, Any]:
    """This test process is the client: the controller's address on the lab bridge."""
    return {"ip": lab.layout.controller_address, "host": "cinder-test-client", "initiator": None}


def connect(cinder: Cinder, lab: Lab, vid: str) -> dict[str, Any]:
    conn: dict[str, Any] = cinder.call("volumes.initialize_connection", vid, connector(lab))
    return conn
