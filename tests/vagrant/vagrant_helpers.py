"""Helpers of the Vagrant tier's tests (beside them: ``--import-mode=importlib``)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path


def controller_ssh(node: str, argv: list[str]) -> list[str]:
    """``argv`` run on ``node`` over the controller's own SSH (the tier's strict ssh config, beside the
    inventory): for streams relayed through the host, where a VM's narrow node key would be refused."""
    cfg = Path(os.environ["ZFS_BACKEND_VAGRANT_INVENTORY"]).parent / "ssh" / "config"
    return ["ssh", "-F", str(cfg), node, "--", shlex.join(argv)]


def relay(src: str, send: list[str], dst: str, recv: list[str], *, limit: int | None = None) -> int:
    """``send`` on ``src`` piped through the host into ``recv`` on ``dst`` (cut after ``limit`` bytes when
    given); returns the receive's exit status. The nodes' own keys only serve granted work (peer-exec):
    a raw stream between two nodes is what the role forbids, so these OpenZFS checks relay it."""
    sender = subprocess.Popen(controller_ssh(src, send), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    receiver = subprocess.Popen(controller_ssh(dst, recv), stdin=subprocess.PIPE)
    assert sender.stdout is not None and receiver.stdin is not None
    moved = 0
    try:
        while limit is None or moved < limit:
            want = 1 << 16 if limit is None else min(1 << 16, limit - moved)
            chunk = sender.stdout.read(want)
            if not chunk:
                break
            receiver.stdin.write(chunk)
            moved += len(chunk)
    finally:
        receiver.stdin.close()
        if limit is not None:
            sender.kill()
        sender.wait(timeout=600)
    return receiver.wait(timeout=600)


CONTROLLER_ADDRESS = "198.18.10.1"  # the host on the nodes' network (scripts/vagrant-tier: $NODE_NET.1)
