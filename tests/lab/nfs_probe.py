"""An NFS client in a process of its own, so that it can run from another lab address: the test starts it
as ``nsenter --net=/run/netns/<node's netns> -- python nfs_probe.py SERVER EXPORT`` (only the network
namespace changes: the host's filesystem and this virtualenv stay visible), or plainly for the
controller's address. Never imported by pytest.

It reads commands on stdin, one a line, and answers each with one JSON line on stdout:

    mount              {"ok": true} or {"ok": false, "error": "..."}   (NFSv3 mount through libnfs)
    read OFFSET COUNT  {"ok": true, "sha256": "..."}                   (on the mount made before)
    write OFFSET HEX   {"ok": true}
    ls VERSION         {"ok": true, "names": [...]}                     (nfs-ls over NFSv3 or v4)
    close              {"ok": true}
"""

from __future__ import annotations

import hashlib
import json
import sys

from zfs_backend.lab.nfs import NfsClient, nfs_ls


def main() -> int:
    server, export = sys.argv[1], sys.argv[2]
    client: NfsClient | None = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        out: dict[str, object] = {"ok": True}
        try:
            if words[0] == "mount":
                if client is not None:
                    client.close()
                client = None
                client = NfsClient(server, export, timeout_ms=10_000)
            elif words[0] == "read":
                assert client is not None, "not mounted"
                data = client.pread("/volume", int(words[1]), int(words[2]))
                out["sha256"] = hashlib.sha256(data).hexdigest()
            elif words[0] == "write":
                assert client is not None, "not mounted"
                client.pwrite("/volume", int(words[1]), bytes.fromhex(words[2]))
            elif words[0] == "ls":
                out["names"] = nfs_ls(server, export, version=int(words[1]))
            elif words[0] == "close":
                if client is not None:
                    client.close()
                client = None
            else:
                raise ValueError(f"unknown command {words[0]!r}")
        except Exception as e:
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
