"""A fake storage node for the driver's unit tests: its ganesha exports file and pid file, its volume
filesystems (``zfs get``), and a record of every command it was asked to run.

The node-side commands run here as on a node, on the in-memory files: ``zfs-backend exports-change``
through the same code (:func:`zfs_backend.driver.exports_node.change_text`; the lock and the atomic
write have their own tests on real files), ``zfs-backend volume-file`` against :attr:`FakeNode.stat`.
What they change on the node is logged as the equivalent events: ``("tee", FILE)`` for a write,
``("kill", "-HUP", PID)`` for a reload, ``("chown", "UID:GID", PATH)`` and ``("chmod", "0MODE", PATH)``
for the volume file."""

from __future__ import annotations

import json

from zfs_backend.driver.exports_node import change_text, parse_request
from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
from zfs_backend.errors import ConfigError, ZfsBackendError
from zfs_backend.hosts.fake import FakeHost

__all__ = ["FakeNode"]


class FakeNode:
    """A node with an exports file, a pid file, a live ganesha, volume filesystems (``zfs get``) and a
    record of every command (kill signals, chown, chmod, writes)."""

    def __init__(self, text: str = "", datasets: tuple[str, ...] = ()) -> None:
        self.files = {DEFAULT_EXPORTS_FILE: text, DEFAULT_PID_FILE: "4242\n"}
        self.datasets = set(datasets)
        self.stat = "0:0 644\n"  # the volume file as `truncate` made it
        self.log: list[tuple[str, ...]] = []
        self.host = FakeHost(self.respond, name="node1")

    def respond(self, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        self.log.append(argv)
        if argv[1:2] == ("exports-change",):
            return self._exports_change(stdin or b"")
        if argv[1:3] == ("volume-file", "access"):
            return self._access(argv[3], f"{argv[4]}:{argv[5]}", argv[6])
        if argv[1:3] == ("volume-file", "truncate"):
            return 0, json.dumps({"size": int(argv[4]), "created": False}), ""
        if argv[0] == "cat":
            return (0, self.files[argv[1]], "") if argv[1] in self.files else (1, "", "No such file")
        if argv[0] == "tee":
            self.files[argv[1]] = (stdin or b"").decode()
            return 0, "", ""
        if argv[0] == "mv":
            self.files[argv[3]] = self.files.pop(argv[2])
            return 0, "", ""
        if argv[0] in ("kill", "chown", "chmod"):
            return 0, "", ""
        if argv[0] == "stat":
            return 0, self.stat, ""
        if argv[:2] == ("zfs", "get"):
            name = argv[-1]
            if name not in self.datasets:
                return 1, "", f"cannot open '{name}': dataset does not exist"
            if argv[-2] == "type":
                return 0, "filesystem\n", ""
            if argv[-2] == "mountpoint":
                return 0, f"mountpoint\t/{name}\n", ""
        return 99, "", f"unexpected {argv}"

    def _exports_change(self, stdin: bytes) -> tuple[int, str, str]:
        try:
            req = parse_request(json.loads(stdin))
            if req.file not in self.files:
                raise ConfigError(f"cannot read the NFS exports file {req.file}: No such file")
            body, answer = change_text(self.files[req.file], req)
            if answer["changed"]:
                self.files[req.file] = body
                self.log.append(("tee", req.file))
                pid = self.files.get(req.pid_file, "").strip()
                if not pid:
                    raise ConfigError(f"the NFS server (nfs-ganesha) is not running ({req.pid_file})")
                self.log.append(("kill", "-HUP", pid))
            return 0, json.dumps(answer), ""
        except ZfsBackendError as e:
            return e.exit_code, json.dumps({"error": str(e), "type": type(e).__name__}), ""

    def _access(self, mountpoint: str, owner: str, mode: str) -> tuple[int, str, str]:
        path, changed = f"{mountpoint}/volume", []
        current = self.stat.split()
        if current[:1] != [owner]:
            self.log.append(("chown", owner, path))
            changed.append("owner")
        if current[1:2] != [mode]:
            self.log.append(("chmod", f"0{mode}", path))
            changed.append("mode")
        return 0, json.dumps({"changed": changed}), ""

    @property
    def signals(self) -> list[tuple[str, ...]]:
        return [a for a in self.log if a[0] == "kill"]

    @property
    def text(self) -> str:
        return self.files[DEFAULT_EXPORTS_FILE]

    def writes(self) -> int:
        return sum(1 for a in self.log if a[0] == "tee")

    def reloads(self) -> int:
        return sum(1 for a in self.log if a[:2] == ("kill", "-HUP"))
