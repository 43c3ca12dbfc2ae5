"""pyzfs (``libzfs_core``) on the OpenZFS VMs: ``Zfs`` on the node itself (a ``LocalHost``), once through
libzfs_core and once through the CLI (``lzc=False``), on the same dataset: existence, a snapshot, a
hold (listed, a second one of the same tag refused with the CLI's words, the held snapshot's destroy
refused as ``DatasetBusy``), its release, a bookmark and the bookmark listing; both paths answer the
same, and the bookmarks libzfs_core lists are those the CLI lists (names, GUIDs, createtxg).

The box carries Debian's ``python3-pyzfs`` (OpenZFS 2.3.2's bindings, in the system's
``dist-packages``); the agent's virtualenv does not see the system's packages
(``include-system-site-packages = false``), so the script runs the installed project with the
system's ``dist-packages`` appended to its path: what the agent would do with a venv made with
``--system-site-packages``."""

from __future__ import annotations

import json

from zfs_backend.hosts import SSHHost
from zfs_backend.zfs import Zfs, parse_dataset

VENV_PYTHON = "/opt/zfs-backend/bin/python"

SCRIPT = r"""
import json, sys
sys.path.append("/usr/lib/python3/dist-packages")
from zfs_backend.errors import DatasetBusy, ZfsBackendError
from zfs_backend.hosts import LocalHost
from zfs_backend.zfs import Zfs, lzc, parse_dataset, parse_snapshot
from zfs_backend.zfs.names import parse_any

ds = parse_dataset(sys.argv[1])
out = {"available": lzc.available()}
for mode in (True, False):
    z = Zfs(LocalHost(), timeout=300, lzc=None if mode else False)
    r = {"lzc": z.lzc}
    s = parse_snapshot(f"{ds}@{'viaLzc' if mode else 'viaCli'}")
    z.snapshot(s)
    r["exists"] = [z.exists(s), z.exists(ds), z.exists(parse_snapshot(f"{ds}@nope"))]
    tag = "zfs_backend:t"
    z.hold(s, tag)
    r["holds"] = z.holds(s)
    try:
        z.hold(s, tag)
        r["again"] = "held twice"
    except ZfsBackendError as e:
        r["again"] = "tag already exists" in str(e)
    try:
        z.destroy(s, deadline=0)
        r["busy"] = "destroyed"
    except DatasetBusy:
        r["busy"] = True
    z.release(s, tag)
    r["released"] = z.holds(s)
    mark = parse_any(f"{ds}#{s.snap}")
    z.bookmark(s, mark)
    r["mark_exists"] = z.exists(mark)
    r["guid"] = z.get_int(s, "guid")
    r["marks"] = [[b.mark, b.guid, b.createtxg] for b in z.list_bookmarks(ds)]
    out["lzc" if mode else "cli"] = r
out["marks_by_cli"] = [[b.mark, b.guid, b.createtxg] for b in Zfs(LocalHost(), lzc=False).list_bookmarks(ds)]
out["marks_by_lzc"] = [[b.mark, b.guid, b.createtxg] for b in Zfs(LocalHost()).list_bookmarks(ds)]
print(json.dumps(out))
"""


def test_libzfs_core_and_the_cli_answer_the_same(vms: dict[str, SSHHost], scratch: str) -> None:
    host = next(iter(vms.values()))
    Zfs(host, timeout=300).create(parse_dataset(scratch))
    res = host.run([VENV_PYTHON, "-c", SCRIPT, scratch], timeout=600)
    out = json.loads(res.text.strip().splitlines()[-1])
    assert out["available"] is True, out  # pyzfs is importable on the VMs
    lz, cl = out["lzc"], out["cli"]
    assert lz["lzc"] is True and cl["lzc"] is False
    for r in (lz, cl):
        assert r["exists"] == [True, True, False], r
        assert r["holds"] == ["zfs_backend:t"] and r["again"] is True and r["busy"] is True, r
        assert r["released"] == [] and r["mark_exists"] is True, r
    assert [m[:2] for m in cl["marks"]] == [["viaLzc", lz["guid"]], ["viaCli", cl["guid"]]]
    assert out["marks_by_lzc"] == out["marks_by_cli"] == cl["marks"]
    # what libzfs_core made, the CLI sees
    z = Zfs(host, timeout=300)
    assert [s.snap for s in z.list_snapshots(parse_dataset(scratch))] == ["viaLzc", "viaCli"]
