"""A private OpenSSH server on loopback for the SSH host tests.

Needs root and /usr/sbin/sshd; otherwise the tests using it are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    dir: Path
    key_file: Path  # client private key (authorized)
    known_hosts: Path  # [127.0.0.1]:port with the server's real host key
    wrong_known_hosts: Path  # [127.0.0.1]:port with another ed25519 key
    empty_known_hosts: Path  # no entry at all
    other_key_file: Path  # a client key the server does not accept
    log: Path


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd not listening on 127.0.0.1:{port} after {deadline_s} s: {log.read_text()}")


def kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*parent.children(recursive=True), parent]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.skip("loopback sshd tests need root (sshd privilege separation)")
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} is missing (Debian package openssh-server)")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is missing (Debian package openssh-client)")
    # sshd refuses to start without its privilege separation directory (the Debian unit creates it).
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    host_key = keygen(d / "host_ed25519", "test-host")
    other_host_key = keygen(d / "other_host_ed25519", "other-host")
    client_key = keygen(d / "id_ed25519", "test-client")
    other_client = keygen(d / "other_id_ed25519", "other-client")
    (d / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())

    port = free_port()
    name = f"[127.0.0.1]:{port}"

    def known(path: Path, pub: Path | None) -> Path:
        text = ""
        if pub is not None:
            kind, b64 = pub.read_text().split()[:2]
            text = f"{name} {kind} {b64}\n"
        path.write_text(text)
        return path

    cfg = d / "sshd_config"
    cfg.write_text(
        f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
PidFile none
UsePAM no
ClientAliveInterval 5
MaxSessions 50
MaxStartups 50
"""
    )
    log = d / "sshd.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=logf, stderr=logf)
    try:
        wait_listening(port, proc, log)
        yield Sshd(
            port=port,
            dir=d,
            key_file=client_key,
            known_hosts=known(d / "known_hosts", Path(f"{host_key}.pub")),
            wrong_known_hosts=known(d / "wrong_known_hosts", Path(f"{other_host_key}.pub")),
            empty_known_hosts=known(d / "empty_known_hosts", None),
            other_key_file=other_client,
            log=log,
        )
    finally:
        kill_tree(proc.pid)
