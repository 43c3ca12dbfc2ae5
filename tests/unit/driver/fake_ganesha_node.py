"""A fake storage node for the driver's unit tests: its ganesha exports file and pid file, its volume
filesystems (``zfs get``), and a record of every command it was asked to run."""

from __future__ import annotations

from zfs_backend.driver.options import DEFAULT_EXPORTS_FILE, DEFAULT_PID_FILE
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
