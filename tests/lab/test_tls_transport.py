"""``replicate --transport tls`` on the lab, through the CLI (issue 25): the stream crosses on the TLS data
channel between the nodes' certificates (issued by ``lab up``), the control stays on SSH. Full and
incremental copies arrive whole (file checksums and GUIDs equal); cancel rolls the destination back;
suspend stops the bytes and resume finishes; the source's agent SIGKILLed mid-transfer finishes by
itself. A node without a certificate refuses before anything starts, in one line. The channel's own
refusals (no certificate, another CA, another node, a wrong or reused token, a second connection) are
tried against a real listener here too, opened by node2's ``peer-exec`` under a real grant and claim."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib
from replication_helpers import MiB, _agent, checksums, cli, guid, listing, new_name, shaped, snapshot, write

TLS_DIR = "/etc/zfs-backend/tls"


@pytest.fixture(scope="module", autouse=True)
def _agents(lab: Lab) -> None:
    if not (lab.state and lab.state.agents):
        pytest.skip("the lab runs without agents")


def _start(settings: Settings, src: str, dst: str, *extra: str) -> str:
    r = cli(settings, "replicate", src, dst, "--transport", "tls", "--detach", *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split()[-1]


def _wait_bytes(settings: Settings, act_id: str, at_least: int, timeout: float = 60) -> int:
    act = _agent(settings, "node1").get(act_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n, _ = act.progress
        if n >= at_least:
            return int(n)
        assert act.state in ("pending", "running"), (act.state, act.error)
        time.sleep(0.2)
    raise AssertionError(f"no {at_least} bytes in {timeout} s: {act.record()}")


def _show(settings: Settings, act_id: str) -> dict[str, Any]:
    r = cli(settings, "activity", "show", act_id, "--node", "node1", "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_full_then_incremental_over_tls(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "a", 24)
    snapshot(n1, ds, "s1")
    r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--transport", "tls", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "succeeded" and out["params"]["transport"] == "tls", out
    assert checksums(n2, ds) == checksums(n1, ds) and len(checksums(n1, ds)) == 1
    assert guid(n2, f"{ds}@s1") == guid(n1, f"{ds}@s1")
    write(n1, ds, "b", 8)
    snapshot(n1, ds, "s2")
    r = cli(lab_settings, "replicate", f"node1:{ds}@s2", f"node2:{ds}", "--transport", "tls", "--json")
    assert r.returncode == 0, r.stderr
    assert "-i" in json.loads(r.stdout)["result"]["plan"] or "incremental" in r.stdout
    assert checksums(n2, ds) == checksums(n1, ds) and len(checksums(n1, ds)) == 2
    assert guid(n2, f"{ds}@s2") == guid(n1, f"{ds}@s2")


@contextlib.contextmanager
def _hidden_certificate(host: SSHHost) -> Iterator[None]:
    host.run(["mv", f"{TLS_DIR}/node.pem", f"{TLS_DIR}/node.pem.hidden-by-test"])
    try:
        yield
    finally:
        host.run(["mv", f"{TLS_DIR}/node.pem.hidden-by-test", f"{TLS_DIR}/node.pem"])


def test_a_node_without_a_certificate_refuses_in_one_line(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str]
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "a", 1)
    snapshot(n1, ds, "s1")
    for host, said in ((n2, "node2 has no TLS certificate"), (n1, "node1 has no TLS certificate")):
        with _hidden_certificate(host):
            r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--transport", "tls")
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not Zfs(n2).exists(parse_dataset(ds))


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_cancel_over_tls_rolls_back(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str], lab: Lab, incremental: bool
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "a", 4 if incremental else 24)
    snapshot(n1, ds, "s1")
    target = "s1"
    if incremental:
        r = cli(lab_settings, "replicate", f"node1:{ds}@s1", f"node2:{ds}", "--transport", "tls")
        assert r.returncode == 0, r.stderr
        write(n1, ds, "b", 24)
        snapshot(n1, ds, "s2")
        target = "s2"
    before, sums = listing(n2, ds), checksums(n2, ds)
    with shaped(lab, "node1", 6):
        act_id = _start(lab_settings, f"node1:{ds}@{target}", f"node2:{ds}")
        _wait_bytes(lab_settings, act_id, 3 * MiB)
        r = cli(lab_settings, "activity", "cancel", act_id, "--node", "node1")
        assert r.returncode == 0, r.stderr
        r = cli(lab_settings, "activity", "wait", act_id, "--node", "node1", timeout=120)
    assert _show(lab_settings, act_id)["state"] == "cancelled"
    assert listing(n2, ds) == before
    assert checksums(n2, ds) == sums


def test_suspend_resume_over_tls(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str], lab: Lab
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "a", 24)
    snapshot(n1, ds, "s1")
    with shaped(lab, "node1", 6):
        act_id = _start(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        _wait_bytes(lab_settings, act_id, 4 * MiB)
        assert cli(lab_settings, "activity", "suspend", act_id, "--node", "node1").returncode == 0
        act = _agent(lab_settings, "node1").get(act_id)
        n0 = act.progress[0]
        time.sleep(2.5)
        n1_ = act.progress[0]
        assert act.state == "suspended"
        assert n1_ - n0 <= 2 * MiB, (n0, n1_)  # at most the chunk in flight lands
        time.sleep(1)
        assert act.progress[0] == n1_  # then nothing moves
        assert cli(lab_settings, "activity", "resume", act_id, "--node", "node1").returncode == 0
        r = cli(lab_settings, "activity", "wait", act_id, "--node", "node1", timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert checksums(n2, ds) == checksums(n1, ds)


def test_source_agent_sigkill_mid_transfer_over_tls(
    lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str], lab: Lab
) -> None:
    n1, n2 = nodes["node1"], nodes["node2"]
    ds = new_name(names)
    write(n1, ds, "a", 24)
    snapshot(n1, ds, "s1")
    with shaped(lab, "node1", 8):
        act_id = _start(lab_settings, f"node1:{ds}@s1", f"node2:{ds}")
        n0 = _wait_bytes(lab_settings, act_id, 4 * MiB)
        lab.restart_service("node1", "agent", hard=True)
        _forget_node1()
        r = cli(lab_settings, "activity", "wait", act_id, "--node", "node1", timeout=240)
    assert r.returncode == 0, (r.stdout, r.stderr)
    shown = _show(lab_settings, act_id)
    assert shown["state"] == "succeeded" and shown["params"]["transport"] == "tls"
    n, m = shown["progress"]["done"], shown["progress"]["total"]
    assert n == m >= n0
    assert checksums(n2, ds) == checksums(n1, ds)
    assert guid(n2, f"{ds}@s1") == guid(n1, f"{ds}@s1")


def _forget_node1() -> None:
    """Forget the session to node1's agent (it was killed): the next call connects again."""
    import replication_helpers

    replication_helpers._AGENTS.pop("node1", None)


# --- the channel's refusals, against node2's real listener ------------------------------------------

HOLDER = "act-01M8PC6J46SJJSD1CGAQ7Y8T55"
# Run on node1 (its own key and namespace): asks node2's peer-exec for a TLS receive, then connects as
# the case says and streams `zfs send` into whatever it got; prints what happened as JSON.
_CLIENT = r"""
import json, os, socket, ssl, subprocess, sys, tempfile
from zfs_backend.replication import tls_channel as T, tls_send as S
cfg = json.load(sys.stdin)
out = {}
ssh = subprocess.Popen(
    ["ssh", "-o", "BatchMode=yes", "node2", "--", "zfs-backend tls-recv zfs receive " + cfg["dataset"]],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
)
addr, port, token = S.parse_offer(ssh.stdout.readline(512))
out["token"] = token
directory = T.DEFAULT_TLS_DIR
if cfg.get("files"):
    directory = tempfile.mkdtemp()
    for name, pem in cfg["files"].items():
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, pem.encode()); os.close(fd)
try:
    if cfg["case"] == "nocert":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.path.join(directory, "ca.pem"))
        tls = ctx.wrap_socket(socket.create_connection((addr, port)), server_hostname="node2")
        tls.sendall(token.encode() + b"\n")
    else:
        tls = S.connect("node2", addr, port, cfg.get("token") or token, directory)
    if cfg.get("second"):
        try:
            socket.create_connection((addr, port), timeout=5).close()
            out["second"] = "accepted"
        except OSError as e:
            out["second"] = "refused: " + str(e)
    send = subprocess.Popen(["zfs", "send", cfg["snapshot"]], stdout=subprocess.PIPE)
    S.pump_from_fd(send.stdout.fileno(), tls)
    send.kill(); send.wait()
except Exception as e:
    out["client_error"] = repr(e)
out["rc"] = ssh.wait(120)
out["stderr"] = ssh.stderr.read().decode()
print(json.dumps(out))
"""


def _peer_rpc(nodes: dict[str, SSHHost], reqs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One peer session of node1 on node2 (node1's key: peer-exec --peer node1)."""
    lines = b"".join(
        json.dumps({"id": i, "op": op, "args": a}).encode() + b"\n" for i, (op, a) in enumerate(reqs)
    )
    r = nodes["node1"].run(
        ["ssh", "-o", "BatchMode=yes", "node2", "--", "zfs-backend", "rpc", "--peer"], input=lines
    )
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


def _try(nodes: dict[str, SSHHost], **cfg: Any) -> dict[str, Any]:
    r = nodes["node1"].run([sys.executable, "-c", _CLIENT], input=json.dumps(cfg).encode(), timeout=300)
    return dict(json.loads(r.text.strip().splitlines()[-1]))


def test_the_listener_refuses_everyone_but_the_granted_peer_with_its_token(
    lab: Lab, lab_settings: Settings, nodes: dict[str, SSHHost], names: list[str], tmp_path: Path
) -> None:
    from zfs_backend.hosts import pki
    from zfs_backend.lab.tls import ca_dir

    n1, n2 = nodes["node1"], nodes["node2"]
    src, ds = new_name(names), new_name(names)
    write(n1, src, "a", 2)
    snapshot(n1, src, "s1")
    g = _agent(lab_settings, "node2").client.call("grant.add", peer="node1", dataset=ds, allow=["create"])
    begin = {"dataset": ds, "holder": HOLDER, "source": f"node1:{src}", "recursive": False, "sent_guids": []}
    assert "result" in _peer_rpc(nodes, [("recv.begin", {**begin, "grant": g["grant"]})])[0]
    rogue = pki.issue_node(tmp_path / "other-ca", "node1")
    node3 = pki.issue_node(ca_dir(lab.layout), "node3")
    as_files = {
        "rogue": {"ca.pem": rogue.ca_pem, "node.pem": rogue.cert_pem, "node.key": rogue.key_pem},
        "node3": {"ca.pem": node3.ca_pem, "node.pem": node3.cert_pem, "node.key": node3.key_pem},
    }
    files = {k: {n: v.decode() for n, v in f.items()} for k, f in as_files.items()}
    common = {"dataset": ds, "snapshot": f"{src}@s1"}
    try:
        first = _try(nodes, case="nocert", **common)
        results = {
            "nocert": first,
            "rogue": _try(nodes, case="rogue", files=files["rogue"], **common),
            "node3": _try(nodes, case="node3", files=files["node3"], **common),
            "wrong token": _try(nodes, case="token", token="0" * 64, **common),
            "reused token": _try(nodes, case="token", token=first["token"], **common),
        }
        for case, res in results.items():
            assert res["rc"] == 126, (case, res)
            assert "refused by the peer" in res["stderr"] and res["stderr"].count("\n") == 1, (case, res)
            assert not Zfs(n2).exists(parse_dataset(ds)), case  # nothing received
        assert "handshake failed" in results["nocert"]["stderr"]
        assert "names ['node3'], not node1" in results["node3"]["stderr"]
        assert "token" in results["wrong token"]["stderr"] and "token" in results["reused token"]["stderr"]
        ok = _try(nodes, case="ok", second=True, **common)  # the granted peer, its token: received
        assert ok["rc"] == 0 and ok["second"].startswith("refused"), ok
        assert guid(n2, f"{ds}@s1") == guid(n1, f"{src}@s1")
    finally:  # the claim given back (the dataset itself goes with the test's names)
        released = _peer_rpc(nodes, [("recv.abort", {"dataset": ds, "holder": HOLDER, "grant": g["grant"]})])
    assert "result" in released[0], released
