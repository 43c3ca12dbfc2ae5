"""A rolling upgrade (``ansible/upgrade.yml``) to new code, with replications across it: one node at a
time, each healthy before the next; the replications finish with their data verified.

One replication is suspended across the whole upgrade (deterministically alive while both agents
restart) and resumed after it; another runs rate-limited during it (it finishes by itself, restarting
its stream if its agent restarted under it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NEW_VERSION = "0.1.0.post1"


def _cli(dep, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ZFS_BACKEND_HOME": str(dep.settings.home),
        "ZFS_BACKEND_INVENTORY": str(dep.inventory),
    }
    return subprocess.run(
        [sys.executable, "-m", "zfs_backend.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _new_source(dep):
    """A copy of this checkout whose code differs (a new version): what an upgrade deploys."""
    repo = Path(__file__).resolve().parents[2]
    src = dep.state_dir / "upgrade-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    shutil.copy2(f"{repo}/pyproject.toml", src)
    shutil.copy2(f"{repo}/README.md", src)
    shutil.copytree(f"{repo}/zfs_backend", src / "zfs_backend", ignore=shutil.ignore_patterns("__pycache__"))
    for path, old, new in (
        (src / "pyproject.toml", 'version = "0.1.0"', f'version = "{NEW_VERSION}"'),
        (src / "zfs_backend" / "__init__.py", '__version__ = "0.1.0"', f'__version__ = "{NEW_VERSION}"'),
    ):
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
    return src


def _start(dep, src_node: str, dst_node: str, fs: str, mib: int, bwlimit: str) -> str:
    src = dep.hosts[src_node]
    src.check_output(f"zfs create {fs}")
    src.check_output(f"dd if=/dev/urandom of=/{fs}/data bs=1M count={mib} status=none")
    src.check_output(f"zfs snapshot {fs}@s1")
    res = _cli(
        dep,
        "replicate",
        f"{src_node}:{fs}@s1",
        f"{dst_node}:{fs}",
        "--detach",
        "--json",
        "--bwlimit",
        bwlimit,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["id"]


def _agent_pid(host) -> int:
    return json.loads(
        host.check_output(
            "/opt/zfs-backend/bin/zfs-backend agent --status --env-file /etc/zfs-backend/agent.env"
        )
    )["agent"]["pid"]


def test_rolling_upgrade_with_replications_across_it(lab_deployment, hosts):
    dep = lab_deployment
    dep.hosts = hosts
    n1, n2 = sorted(hosts)[:2]
    pids_before = {n: _agent_pid(h) for n, h in hosts.items()}
    parked = _start(dep, n1, n2, "tank/up-parked", 8, "256K")  # 32 s at least: suspended long before the end
    assert _cli(dep, "activity", "suspend", parked, "--node", n1).returncode == 0
    running = _start(dep, n1, n2, "tank/up-running", 24, "1M")

    source = _new_source(dep)
    run = dep.playbook("upgrade.yml", "-e", f"zfs_backend_node_source={source}")
    assert run.returncode == 0, run.failure()

    # one node at a time: the rolling play ran once per node, each healthy before the next began
    batches = [
        m.start() for m in re.finditer(r"^PLAY \[Upgrade storage nodes one at a time\]", run.output, re.M)
    ]
    assert len(batches) == len(hosts), run.output[-2000:]
    healthy = re.compile(
        r"^TASK \[zfs_backend_node : Wait until the agent answers and reports healthy\]", re.M
    )
    for i, start in enumerate(batches):
        end = batches[i + 1] if i + 1 < len(batches) else len(run.output)
        assert healthy.search(run.output, start, end), f"batch {i + 1} did not wait for a healthy agent"

    for name, host in hosts.items():
        assert host.check_output("/opt/zfs-backend/bin/zfs-backend --version").endswith(NEW_VERSION)
        assert _agent_pid(host) != pids_before[name], f"{name}: the agent was not restarted on new code"

    assert _cli(dep, "activity", "resume", parked, "--node", n1).returncode == 0
    for aid in (parked, running):
        res = _cli(dep, "activity", "wait", aid, "--node", n1, "--timeout", "600", timeout=700)
        assert res.returncode == 0, (aid, res.stdout[-500:], res.stderr[-500:])
    for fs in ("tank/up-parked", "tank/up-running"):
        want = hosts[n1].check_output(f"sha256sum /{fs}/data").split()[0]
        assert hosts[n2].check_output(f"sha256sum /{fs}/data").split()[0] == want
        hosts[n1].run(f"zfs destroy -r {fs}")
        hosts[n2].run(f"zfs destroy -r {fs}")
    # the agent that hosts them carried both on after its restart (they were never restarted by us)
    log = hosts[n1].check_output("cat /var/lib/zfs-backend/agent/agent.log")
    carried = [
        json.loads(line).get("carried_on") or [] for line in log.splitlines() if '"agent started"' in line
    ]
    assert any(parked in c for c in carried), carried
