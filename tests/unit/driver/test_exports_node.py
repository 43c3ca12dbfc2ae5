"""The node's side of an exports change (``zfs-backend exports-change``) on real files: the request's
validation, the lock, the unique temporary file, the mode, one reload per change, and REAL concurrent
processes changing one file without losing a grant or leaking one."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.driver.errors import InvalidAttachment
from zfs_backend.driver.exports_format import parse_exports
from zfs_backend.driver.exports_node import apply_change, main, parse_request
from zfs_backend.errors import ConfigError, UsageError

FOREIGN = "# hand-written\nEXPORT { Export_Id = 7; Path = /srv; CLIENT { Clients = *; } }\n"


def request(tmp: Path, op: str, dataset: str = "tank/volumes/volume-a", **fields: Any) -> dict[str, Any]:
    return {
        "file": str(tmp / "exports.conf"),
        "pid_file": str(tmp / "ganesha.pid"),
        "protocols": [3, 4],
        "security": [True, 65534, 65534],
        "op": op,
        "dataset": dataset,
        **fields,
    }


@pytest.fixture
def node(tmp_path: Path) -> Path:
    (tmp_path / "exports.conf").write_text(FOREIGN)
    (tmp_path / "exports.conf").chmod(0o644)
    return tmp_path


def reloads() -> tuple[list[str], Any]:
    seen: list[str] = []
    return seen, seen.append


def apply(tmp: Path, op: str, dataset: str = "tank/volumes/volume-a", **fields: Any) -> dict[str, Any]:
    seen, hup = reloads()
    answer = apply_change(parse_request(request(tmp, op, dataset, **fields)), hup)
    answer["reloads"] = len(seen)
    return answer


def grants(tmp: Path) -> dict[str, list[tuple[str, str]]]:
    entries = parse_exports((tmp / "exports.conf").read_text())[0]
    return {k: [(a.id, a.client) for a in e.attachments] for k, e in entries.items()}


@pytest.mark.parametrize(
    "change",
    [
        {"op": "rm"},
        {"file": "exports.conf"},
        {"file": "/etc/x; rm -rf /"},
        {"file": "/etc/../x"},
        {"pid_file": None},
        {"protocols": [2]},
        {"protocols": "3"},
        {"security": [1, 0, 0]},
        {"security": [True, -1, 0]},
        {"dataset": "tank/a b"},
        {"dataset": 5},
        {"path": "/tank/v\n"},
        {"attachments": [["a", "*"]]},
        {"attachments": [["a b", "198.18.0.1"]]},
        {"attachments": "a"},
        {"attachment": "x;y"},
        {"client": "127.0.0.1"},
        {"only_unattached": "yes"},
    ],
)
def test_request_refused_field_by_field(node: Path, change: dict[str, Any]) -> None:
    raw = {**request(node, "add", path="/tank/volumes/volume-a"), **change}
    with pytest.raises(UsageError):
        parse_request(raw)


def test_hostile_request_changes_nothing_through_the_command(node: Path) -> None:
    before = (node / "exports.conf").read_text()
    for text in ("not json", json.dumps([1]), json.dumps({**request(node, "attach"), "client": "::1"})):
        out = io.StringIO()
        assert main(io.StringIO(text), out) == 2
        answer = json.loads(out.getvalue())
        assert answer["type"] in ("UsageError", "InvalidClient") and "\n" not in answer["error"]
    assert (node / "exports.conf").read_text() == before and not (node / "exports.conf.lock").exists()


def test_change_writes_a_unique_temporary_file_keeps_the_mode_and_reloads_once(node: Path) -> None:
    (node / "exports.conf").chmod(0o640)
    stale = node / "exports.conf.0123456789abcdef.tmp"
    stale.write_text("left by a writer that died")
    keep = node / "exports.conf.mine.tmp"  # not our pattern: never touched
    keep.write_text("x")
    out = apply(node, "add", path="/tank/volumes/volume-a")
    assert out["changed"] and out["reloads"] == 1 and out["result"]["entry"]["export_id"] == 100
    assert stat.S_IMODE((node / "exports.conf").stat().st_mode) == 0o640
    assert stat.S_IMODE((node / "exports.conf.lock").stat().st_mode) == 0o600
    assert not stale.exists() and keep.exists()
    assert sorted(p.name for p in node.iterdir()) == [
        "exports.conf",
        "exports.conf.lock",
        "exports.conf.mine.tmp",
    ]
    assert (node / "exports.conf").read_text().startswith(FOREIGN)
    again = apply(node, "add", path="/tank/volumes/volume-a")
    assert not again["changed"] and again["reloads"] == 0  # nothing to change: no write, no reload


def test_new_file_is_0644_whatever_the_umask(tmp_path: Path) -> None:
    (tmp_path / "exports.conf").write_text("")
    (tmp_path / "exports.conf").unlink()
    with pytest.raises(ConfigError, match="cannot read the NFS exports file"):
        apply(tmp_path, "add", path="/tank/volumes/volume-a")
    (tmp_path / "exports.conf").write_text("")
    os.chmod(tmp_path / "exports.conf", 0o644)
    old = os.umask(0o077)
    try:
        apply(tmp_path, "add", path="/tank/volumes/volume-a")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "exports.conf").stat().st_mode) == 0o644


def test_reload_signals_the_server_and_a_dead_one_is_an_error(node: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(60)",
        ]
    )
    try:
        (node / "ganesha.pid").write_text(f"{child.pid}\n")
        req = parse_request(request(node, "add", path="/tank/volumes/volume-a"))
        assert apply_change(req)["changed"]  # the real SIGHUP, which the child ignores
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    req = parse_request(request(node, "add", "tank/volumes/volume-b", path="/tank/volumes/volume-b"))
    with pytest.raises(ConfigError, match="not running"):
        apply_change(req)


def test_attachments_counted_per_id(node: Path) -> None:
    apply(node, "add", path="/tank/volumes/volume-a")
    a = apply(node, "attach", attachment="att-1", client="198.18.0.5")
    assert a["result"]["entry"]["attachments"] == [["att-1", "198.18.0.5"]]
    apply(node, "attach", attachment="att-2", client="198.18.0.5")
    apply(node, "attach", client="198.18.0.6", attachment="client-198.18.0.6")
    with pytest.raises(InvalidAttachment, match=r"already attached from 198\.18\.0\.5"):
        apply(node, "attach", attachment="att-1", client="198.18.0.9")
    same = apply(node, "attach", attachment="att-1", client="198.18.0.5")  # idempotent
    assert not same["changed"] and same["reloads"] == 0
    one = apply(node, "detach", attachment="att-1")
    assert one["result"] == {"detached": [["att-1", "198.18.0.5"]], "revoked": []}  # att-2 holds it
    assert "Clients = 198.18.0.5, 198.18.0.6;" in (node / "exports.conf").read_text()
    two = apply(node, "detach", attachment="att-2", client="198.18.0.5")
    assert two["result"] == {"detached": [["att-2", "198.18.0.5"]], "revoked": ["198.18.0.5"]}
    assert apply(node, "detach", attachment="att-2")["result"] == {"detached": [], "revoked": []}
    assert grants(node) == {"tank/volumes/volume-a": [("client-198.18.0.6", "198.18.0.6")]}
    kept = apply(node, "remove", only_unattached=True)
    assert kept["result"]["removed"] is None and not kept["changed"]
    everyone = apply(node, "detach")
    assert everyone["result"]["revoked"] == ["198.18.0.6"]
    assert apply(node, "remove", only_unattached=True)["result"]["removed"]["export_id"] == 100
    assert grants(node) == {} and (node / "exports.conf").read_text() == FOREIGN


def test_detach_by_client_ends_every_attachment_of_it(node: Path) -> None:
    apply(
        node, "add", path="/tank/volumes/volume-a", attachments=[["a1", "198.18.0.5"], ["a2", "198.18.0.5"]]
    )
    apply(node, "attach", attachment="b1", client="198.18.0.7")
    out = apply(node, "detach", client="198.18.0.5")
    assert out["result"] == {
        "detached": [["a1", "198.18.0.5"], ["a2", "198.18.0.5"]],
        "revoked": ["198.18.0.5"],
    }
    assert grants(node) == {"tank/volumes/volume-a": [("b1", "198.18.0.7")]}


# ---- real processes ---------------------------------------------------------------------------------


def _worker(tmp: str, worker: int, rounds: int) -> None:
    """Attach and detach, over and over, one volume of its own and one shared with every worker (two
    attachments of its own address on it); leaves exactly what ``expected`` says."""
    base = Path(tmp)

    def run(op: str, dataset: str, **fields: Any) -> None:
        apply_change(parse_request(request(base, op, dataset, **fields)), lambda pid: None)

    own, shared = f"tank/volumes/volume-w{worker}", "tank/volumes/volume-shared"
    client = f"198.18.1.{worker + 1}"
    run("add", own, path=f"/tank/volumes/volume-w{worker}")
    for i in range(rounds):
        run("attach", shared, attachment=f"w{worker}-a", client=client)
        run("attach", shared, attachment=f"w{worker}-b", client=client)
        run("attach", own, attachment=f"r{i}", client=client)
        run("detach", shared, attachment=f"w{worker}-a")
        if i % 2:
            run("detach", own, attachment=f"r{i}")
        if i < rounds - 1:
            run("detach", shared, attachment=f"w{worker}-b")


def expected(workers: int, rounds: int) -> dict[str, list[tuple[str, str]]]:
    out = {"tank/volumes/volume-shared": sorted((f"w{w}-b", f"198.18.1.{w + 1}") for w in range(workers))}
    for w in range(workers):
        out[f"tank/volumes/volume-w{w}"] = sorted(
            (f"r{i}", f"198.18.1.{w + 1}") for i in range(rounds) if not i % 2
        )
    return out


def test_concurrent_processes_lose_no_grant_and_leak_none(node: Path) -> None:
    workers, rounds = 4, 12
    apply(node, "add", "tank/volumes/volume-shared", path="/tank/volumes/volume-shared")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(node), w, rounds)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    assert grants(node) == expected(workers, rounds)
    text = (node / "exports.conf").read_text()
    entries = parse_exports(text)[0]
    assert entries["tank/volumes/volume-shared"].clients == tuple(f"198.18.1.{w + 1}" for w in range(workers))
    assert len({e.export_id for e in entries.values()}) == workers + 1  # no Export_Id given twice
    assert text.startswith(FOREIGN)
    assert not [p for p in node.iterdir() if p.name.endswith(".tmp")]


def test_the_command_line_applies_a_change(node: Path) -> None:
    """``zfs-backend exports-change`` as the driver runs it over SSH: JSON in, JSON out."""
    cmd = [str(Path(sys.executable).parent / "zfs-backend"), "exports-change"]
    raw = request(node, "add", path="/tank/volumes/volume-a", attachments=[["x1", "198.18.0.9"]])
    r = subprocess.run(cmd, input=json.dumps(raw), capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 3 and json.loads(r.stdout)["error"].startswith("the NFS server")  # no pid file
    assert grants(node) == {"tank/volumes/volume-a": [("x1", "198.18.0.9")]}  # written before the reload
    (node / "ganesha.pid").write_text(f"{os.getpid()}\n")
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        raw = request(node, "detach", attachment="x1")
        r = subprocess.run(
            cmd, input=json.dumps(raw), capture_output=True, text=True, check=False, timeout=60
        )
    finally:
        signal.signal(signal.SIGHUP, old)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["result"]["revoked"] == ["198.18.0.9"]
