"""The data-safety rules on OpenZFS, from the command line (``zfs-backend replicate``): a new replica is
read-only and marked with its receiver and source; data written into a replica that was opened up (a
few KiB, the case the ``written`` check must see on OpenZFS, where a write shows in ``written`` only
once its transaction group is synced) refuses the next increment with one line, exit 8, and the
destination keeps every snapshot (GUIDs) and byte (checksums); ``--rollback-destination`` then says
what it discarded. Holds keeping the base (OpenZFS has user holds, zfs-fuse does not):
test_standby_openzfs.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zfs_backend.config import Settings
from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
sys.path.insert(0, str(Path(__file__).parent.parent / "lab"))  # and the lab's, reused as they are
from replication_helpers import cli
from replication_vm import T, checksums, listing, new_name, snapshot, write


def writable(host: SSHHost, ds: str) -> bool:
    mnt = Zfs(host, timeout=T).mountpoint(parse_dataset(ds))
    probe = f"{mnt}/.probe-write"
    return (
        host.run(["sh", "-c", 'touch "$1" && rm -f "$1"', "sh", probe], check=False, timeout=T).returncode
        == 0
    )


def replicate_cli(settings: Settings, src: str, dst: str, *args: str) -> tuple[int, str, str]:
    r = cli(settings, "replicate", src, dst, "--json", *args, timeout=2 * T)
    return r.returncode, r.stdout, r.stderr.strip()


def test_a_replica_is_read_only_and_data_written_into_it_is_never_discarded(
    vm_pair: tuple[SSHHost, SSHHost], settings: Settings, names: list[str]
) -> None:
    src, dst = vm_pair
    ds = new_name(names)
    write(src, ds, "a", 2)
    snapshot(src, ds, "s1")
    rc, out, err = replicate_cli(settings, f"{src.name}:{ds}@s1", f"{dst.name}:{ds}")
    assert rc == 0, (out, err)
    zd = Zfs(dst, timeout=T)
    assert zd.get(parse_dataset(ds), ["readonly"])["readonly"] == "on"
    assert checksums(dst, ds) == checksums(src, ds)  # mounts the replica (read-only) to read it
    assert not writable(dst, ds)
    assert zd.get(parse_dataset(ds), ["zfs_backend:source"])["zfs_backend:source"] == f"{src.name}:{ds}"
    # a user opens the replica up and writes a few KiB into it; the source moves on
    zd.set(parse_dataset(ds), "readonly", "off")
    mnt = zd.mountpoint(parse_dataset(ds))
    dst.run(["dd", "if=/dev/urandom", f"of={mnt}/mine", "bs=1k", "count=4", "status=none"], timeout=T)
    write(src, ds, "b", 1)
    snapshot(src, ds, "s2")
    before, sums = listing(dst, ds), checksums(dst, ds)
    assert "./mine" in sums
    rc, out, err = replicate_cli(settings, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}")
    assert rc == 8, (rc, out, err)
    # refused at the start (one line on stderr) or, a change too fresh for the space accounting, by the
    # receive itself (the activity's record, failed with status 8)
    why = err or str(json.loads(out)["error"])
    assert why.count("\n") == 0 and ("diverged" in why or "changed after" in why), why
    assert listing(dst, ds) == before and checksums(dst, ds) == sums  # nothing discarded
    assert writable(dst, ds)  # its read-only lock during the attempt was undone
    # asked for explicitly, the rollback goes ahead and names what it discarded
    rc, out, err = replicate_cli(
        settings, f"{src.name}:{ds}@s2", f"{dst.name}:{ds}", "--rollback-destination"
    )
    assert rc == 0, (out, err)
    result = json.loads(out)
    gone = (result.get("result") or result)["discarded"][""]
    assert gone["bytes"] >= 4096 and gone["changes"], gone
    assert listing(dst, ds) == listing(src, ds)
    assert checksums(dst, ds) == checksums(src, ds)
