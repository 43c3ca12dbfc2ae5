"""Lab nodes deployed as real ones: ``ansible-playbook`` from this checkout's ``ansible/`` against the
lab's inventory (``lab up --provision``), and the daemons the role started adopted into the lab's state.

Everything ansible writes on the controller (its home, temp files, SSH control sockets, the wheelhouse
the role builds) stays under the lab's state directory: ``lab down`` removes it all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError, MissingDependency
from .node import POOL_DIR, run_in
from .topology import LabLayout, NodeLayout

__all__ = [
    "NODE_BIN",
    "ROLE_PIDFILES",
    "PlaybookRun",
    "adopt_pids",
    "ansible_dir",
    "ansible_env",
    "parse_recap",
    "role_vars",
    "run_playbook",
]

NODE_PREFIX = "/opt/zfs-backend"
NODE_BIN = f"{NODE_PREFIX}/bin/zfs-backend"
# Where the role's daemons leave their pid (inside a node); sshd is the bare node's, started by the lab.
ROLE_PIDFILES = {
    "zfs-fuse": "/run/zfs/zfs-fuse.pid",
    "rpcbind": "/run/zfs-backend/rpcbind.pid",
    "nfs-ganesha": "/run/ganesha/ganesha.pid",
    "agent": "/run/zfs-backend/supervisor.pid",
}
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def ansible_dir() -> Path:
    """This checkout's ``ansible/`` (deployment runs from a checkout, not from an installed wheel)."""
    d = Path(__file__).resolve().parents[2] / "ansible"
    if not (d / "site.yml").is_file():
        raise MissingDependency(f"{d}/site.yml not found: deploy from a checkout of zfs_backend")
    return d


def _ansible_playbook() -> str:
    candidate = Path(sys.prefix) / "bin" / "ansible-playbook"
    if candidate.exists():
        return str(candidate)
    raise MissingDependency(
        f"{candidate} not found: ansible-core comes pinned with the project (run scripts/bootstrap)"
    )


def ansible_env(state_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ansible: this checkout's ansible.cfg, and every file ansible writes on the
    controller under ``state_dir/ansible`` (never ``~/.ansible``)."""
    home = state_dir / "ansible"
    for d in (home, home / "tmp", home / "cp"):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "ANSIBLE_CONFIG": str(ansible_dir() / "ansible.cfg"),
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(home / "pc"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{Path(sys.prefix) / 'bin'}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        }
    )
    return env


@dataclass(frozen=True)
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(h["failed"] + h["unreachable"] for h in self.recap.values())

    def failure(self) -> str:
        """The play's own error messages (``fatal:`` lines and their ``msg``), on one line."""
        msgs = re.findall(r'"msg": "((?:[^"\\]|\\.)*)"', self.output)
        fatal = [line.strip() for line in self.output.splitlines() if line.startswith(("fatal:", "ERROR!"))]
        return " | ".join(msgs[-3:] or fatal[-3:] or self.output.strip().splitlines()[-3:])


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    return {
        m.group(1): {
            "ok": int(m.group(2)),
            "changed": int(m.group(3)),
            "unreachable": int(m.group(4)),
            "failed": int(m.group(5)),
        }
        for m in _RECAP.finditer(output)
    }


def run_playbook(
    state_dir: Path,
    inventory: Path,
    playbook: str = "site.yml",
    args: Sequence[str] = (),
    log: Path | None = None,
    timeout: float = 1800.0,
) -> PlaybookRun:
    """Run ``ansible/<playbook>`` against ``inventory``. A failed play does not raise: see ``returncode``."""
    argv = [_ansible_playbook(), "-i", str(inventory), str(ansible_dir() / playbook), *args]
    res = subprocess.run(
        argv,
        env=ansible_env(state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=str(state_dir),
    )
    output = res.stdout + (("\n" + res.stderr) if res.stderr.strip() else "")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{output}\n")
    return PlaybookRun(res.returncode, output, parse_recap(res.stdout))


def role_vars(lay: LabLayout, pool_size: int, provisioned: bool) -> dict[str, object]:
    """What ``ansible/site.yml`` needs to know about lab nodes, written into the lab's inventory."""
    return {
        "ansible_python_interpreter": shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3",
        "zfs_backend_lab_provisioned": provisioned,
        "zfs_backend_node_sshd_config": "/etc/ssh/zfs-backend/sshd_config",
        "zfs_backend_node_pool_files": [f"{POOL_DIR}/tank.img"],
        "zfs_backend_node_pool_file_size": str(pool_size),
        "zfs_backend_node_wheelhouse": str(lay.state_dir / "wheelhouse"),
        # each node's TLS files, issued by the lab's CA (lab/tls.py): <dir>/<node>/{ca,node}.pem, node.key
        "zfs_backend_node_tls_source": str(lay.state_dir / "pki" / "nodes"),
    }


def adopt_pids(lay: LabLayout, node: NodeLayout) -> dict[str, int]:
    """The pids of the daemons the role started in ``node`` (from their pid files), for ``lab.json``."""
    out: dict[str, int] = {}
    for service, pidfile in ROLE_PIDFILES.items():
        res = run_in(lay, node, ["cat", pidfile], check=False)
        text = res.stdout.strip()
        if res.returncode == 0 and text.isdigit():
            out[service] = int(text)
    return out


def deploy(lay: LabLayout, nodes: Sequence[NodeLayout], log: Path) -> PlaybookRun:
    """``site.yml`` on every lab node; LabError with the play's own message when it fails."""
    run = run_playbook(lay.state_dir, lay.inventory, "site.yml", log=log)
    if run.returncode != 0:
        raise LabError(f"ansible/site.yml failed (log {log}): {run.failure()}")
    return run
