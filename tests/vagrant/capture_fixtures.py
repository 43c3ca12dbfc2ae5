"""Capture real OpenZFS outputs from a Vagrant tier VM into ``tests/unit/zfs/data/``.

    scripts/vagrant-tier run -- .venv/bin/python tests/vagrant/capture_fixtures.py

(or, with the tier up, ``ZFS_BACKEND_VAGRANT_INVENTORY=...`` and the same command)

Every file is written verbatim from the command named in ``openzfs_2_captured.json`` (stdout, or
stderr where the command prints its usage there), on a scratch dataset ``tank/fixture`` that is
destroyed afterwards. Not a test: run it when the box's OpenZFS changes, then run the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from zfs_backend.config import load_settings
from zfs_backend.hosts import SSHHost, load_inventory

OUT = Path(__file__).resolve().parents[1] / "unit" / "zfs" / "data"
DS = "tank/fixture"
NVP = ["zfs", "send", "-n", "-v", "-P"]
T = 600.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inventory", default=os.environ.get("ZFS_BACKEND_VAGRANT_INVENTORY"))
    ap.add_argument("--node", default="zb-node1")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not args.inventory:
        ap.error("no inventory: set ZFS_BACKEND_VAGRANT_INVENTORY or pass --inventory")
    host = load_inventory(args.inventory).connect(args.node, load_settings(), connect_timeout=60)
    try:
        meta = capture(host, args.out)
    finally:
        host.run(["zfs", "destroy", "-r", DS], timeout=T, check=False)
        host.close()
    (args.out / "openzfs_2_captured.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    files = meta["files"]
    assert isinstance(files, dict)
    print(f"captured {len(files)} files from {args.node} (OpenZFS {meta['version']}) into {args.out}")
    return 0


def capture(host: SSHHost, out: Path) -> dict[str, object]:
    files: dict[str, dict[str, object]] = {}

    def run(argv: list[str], *, check: bool = True) -> tuple[int, str, str]:
        res = host.run(argv, timeout=T, check=check)
        return res.returncode, res.text, res.err_text

    def sh(script: str) -> str:
        return run(["sh", "-c", script])[1]

    def save(name: str, argv: list[str], *, stream: str = "stdout", expect_rc: int | None = 0) -> str:
        rc, so, se = run(argv, check=False)
        if expect_rc is not None and rc != expect_rc:
            raise SystemExit(f"{shlex.join(argv)}: exit {rc}, expected {expect_rc}: {se.strip()[:200]}")
        text = so if stream == "stdout" else se
        (out / name).write_text(text)
        files[name] = {"argv": argv, "stream": stream, "returncode": rc}
        return text

    run(["zfs", "destroy", "-r", DS], check=False)
    # usage texts (what the dialect probe reads)
    save("openzfs_2_zfs_usage.txt", ["zfs"], stream="stderr", expect_rc=2)
    save("openzfs_2_zpool_usage.txt", ["zpool"], stream="stderr", expect_rc=2)
    save("openzfs_2_get_usage.txt", ["zfs", "get"], stream="stderr", expect_rc=2)
    save("openzfs_2_holds.txt", ["zfs", "holds"], stream="stderr", expect_rc=2)
    version = save("openzfs_2_version.txt", ["zfs", "version"]).splitlines()[0]

    # a small dataset with two snapshots and known data
    run(["zfs", "create", "-o", "compression=off", DS])
    mp = f"/{DS}"
    run(["dd", "if=/dev/urandom", f"of={mp}/a", "bs=1M", "count=4", "conv=fsync", "status=none"])
    run(["zfs", "snapshot", f"{DS}@s1"])
    run(["dd", "if=/dev/urandom", f"of={mp}/b", "bs=1M", "count=2", "conv=fsync", "status=none"])
    run(["zfs", "snapshot", f"{DS}@s2"])
    run(["zfs", "hold", "zfs-backend-fixture", f"{DS}@s1"])

    snap_cols = "name,guid,createtxg,used,referenced,creation"
    cols = "name,type,guid,createtxg,used,referenced,available,mountpoint,mounted,origin"
    save(
        "openzfs_2_list_Hp.txt",
        ["zfs", "list", "-Hp", "-r", "-t", "filesystem,volume", "-o", cols, DS],
    )
    save(
        "openzfs_2_list_snapshots_Hp.txt",
        ["zfs", "list", "-Hp", "-t", "snapshot", "-d", "1", "-o", snap_cols, DS],
    )
    save(
        "openzfs_2_get_Hp.txt",
        ["zfs", "get", "-Hp", "-o", "property,value", "used,referenced,written,written@s1", f"{DS}@s2"],
    )
    save("openzfs_2_zpool_list_Hp.txt", ["zpool", "list", "-Hp", "-o", "name,size,allocated,free", "tank"])
    save("openzfs_2_holds_H.txt", ["zfs", "holds", "-H", f"{DS}@s1"])

    # send estimates and the real stream sizes
    sizes: dict[str, int] = {}
    for name, argv in (
        ("openzfs_2_send_nvP_full.txt", [*NVP, f"{DS}@s1"]),
        ("openzfs_2_send_nvP_incremental.txt", [*NVP, "-i", f"{DS}@s1", f"{DS}@s2"]),
        ("openzfs_2_send_nvP_intermediates.txt", [*NVP, "-I", f"{DS}@s1", f"{DS}@s2"]),
    ):
        save(name, argv)
        real = [a for a in argv if a not in ("-n", "-v", "-P")]
        sizes[name] = int(sh(f"{shlex.join(real)} | wc -c").strip())

    # a receive cut after 1 MiB: the resume token, and the estimate of what is left
    sh(f"zfs send {DS}@s1 | head -c 1048576 | zfs receive -s {DS}-cut || true")
    token = run(["zfs", "get", "-H", "-o", "value", "receive_resume_token", f"{DS}-cut"])[1].strip()
    save("openzfs_2_send_nvP_token.txt", [*NVP, "-t", token])
    save(
        "openzfs_2_error_recv_abort_missing.txt",
        ["zfs", "receive", "-A", f"{DS}-nothing"],
        stream="stderr",
        expect_rc=None,
    )
    run(["zfs", "receive", "-A", f"{DS}-cut"])

    # the stderr of failures the command chokepoint maps to typed errors
    missing = ["zfs", "get", "-H", "type", f"{DS}/missing"]
    save("openzfs_2_error_not_found.txt", missing, stream="stderr", expect_rc=1)
    save("openzfs_2_error_held.txt", ["zfs", "destroy", f"{DS}@s1"], stream="stderr", expect_rc=1)
    save("openzfs_2_error_exists.txt", ["zfs", "create", DS], stream="stderr", expect_rc=1)
    save("openzfs_2_error_has_children.txt", ["zfs", "destroy", DS], stream="stderr", expect_rc=1)
    # an incremental into a replica that was changed after its newest snapshot
    sh(f"zfs send {DS}@s1 | zfs receive {DS}-replica")
    run(["dd", "if=/dev/urandom", f"of=/{DS}-replica/c", "bs=64k", "count=1", "conv=fsync", "status=none"])
    save(
        "openzfs_2_error_modified.txt",
        ["sh", "-c", f"zfs send -i {DS}@s1 {DS}@s2 | zfs receive {DS}-replica"],
        stream="stderr",
        expect_rc=1,
    )
    run(["zfs", "destroy", "-r", f"{DS}-replica"])
    run(["zfs", "release", "zfs-backend-fixture", f"{DS}@s1"])
    kernel = run(["uname", "-r"])[1].strip()
    return {
        "node": host.name,
        "version": version,
        "kernel": kernel,
        "dataset": DS,
        "stream_bytes": sizes,
        "files": files,
    }


if __name__ == "__main__":
    sys.exit(main())
