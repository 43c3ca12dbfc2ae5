"""NFS exports of volume filesystems on an nfs-ganesha server, managed live, granted per attachment.

The driver owns one file on the node (``NodeOptions.exports_file``), ``%include``\\ d by the server's
``ganesha.conf``. It holds one ``EXPORT`` block per volume filesystem, each between two marker
comments naming the dataset; anything else in the file is kept as it is (the format:
:mod:`.exports_format`). After a change the server gets ``SIGHUP`` and re-reads its exports: new
blocks are added, missing ones removed and changed ones updated, without a restart.

Access is granted, not open: an export's own ``Access_Type`` is ``None``, so nobody can mount it until
an address is granted, and the grants are one ``CLIENT`` block listing the granted addresses with
``Access_Type = RW``. Grants are **counted per attachment**: each attach records an attachment (an id:
Cinder's or the caller's, by default ``client-ADDR``; and the address) and an address stays granted
while any attachment of it is left, so detaching one of two attachments from one host keeps the other
working. **Where the attachment records live:** in the exports file itself, as comments in the
volume's block, written in the same change as the grant they hold: the two cannot drift, and what
the server enforces and what the driver believes are one text. Squashing (``Squash`` and
``Anonymous_Uid``/``Anonymous_Gid``) is set per export from :class:`ExportSecurity`. Every address
and attachment id is validated (:func:`validate_client`) before any command.

**One change at a time, across processes:** every change runs on the node, whole, in one
``zfs-backend exports-change`` process (:mod:`.exports_node`) that takes an exclusive ``flock`` beside
the file, reads, applies the change (JSON on stdin, validated), writes a uniquely named temporary file,
fsyncs, renames and signals ganesha once, then releases the lock. Any number of controller processes
(cinder-volume backends, the CLI, conductors) may change one node's exports at once; none loses
another's change. Reads (``cat``) need no lock: the file is only ever replaced whole.

Measured with ganesha 4.3 on zfs-fuse: the reload is near-immediate; a revoked address is refused at
once, also on a mount it made before (NFSv3 ``MNT3ERR_ACCES`` for a new mount, "RPC packet not
accepted" on an old one; over NFSv4 the export is not even visible to it). A removed export's files
can stay open for a moment, so a destroy after :meth:`GaneshaExports.remove` must be retried within a
deadline (``Zfs.destroy`` does). ganesha caches file attributes (``Attr_Expiration_Time``, 60 s), so
the driver sets a volume file's owner and mode before exporting it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConfigError, UsageError, ZfsBackendError
from ..hosts.base import Host
from ..zfs.names import DatasetName, parse_dataset
from .errors import InvalidAttachment, InvalidClient, UnsafeVolumeFile
from .exports_format import (
    MAX_ANONYMOUS_ID,
    Attachment,
    ExportEntry,
    ExportSecurity,
    canonical_clients,
    default_attachment,
    parse_exports,
    render_export,
    render_file,
    validate_attachment_id,
    validate_client,
    validate_export_path,
)

__all__ = [
    "MAX_ANONYMOUS_ID",
    "Attachment",
    "ExportEntry",
    "ExportSecurity",
    "GaneshaExports",
    "default_attachment",
    "node_command",
    "parse_exports",
    "render_export",
    "validate_attachment_id",
    "validate_client",
    "validate_export_path",
]

_ERRORS: dict[str, type[ZfsBackendError]] = {
    "InvalidAttachment": InvalidAttachment,
    "InvalidClient": InvalidClient,
    "UnsafeVolumeFile": UnsafeVolumeFile,
    "UsageError": UsageError,
}


def node_command(host: Host, argv: Sequence[str], payload: bytes | None = None) -> dict[str, Any]:
    """Run one of the node-side ``zfs-backend`` commands (JSON answer on stdout) and return its answer;
    a refusal there is raised here as the same error (its one line, prefixed with the node)."""
    res = host.run(list(argv), input=payload, check=False)
    try:
        answer = json.loads(res.text)
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        why = (res.err_text.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise ConfigError(f"{host.name}: {argv[1]} failed: {why} (is zfs-backend installed there?)") from None
    if res.returncode != 0 or "error" in answer:
        raise _ERRORS.get(str(answer.get("type")), ConfigError)(f"{host.name}: {answer.get('error')}")
    return answer


def _entry(raw: Any) -> ExportEntry | None:
    if raw is None:
        return None
    atts = tuple(Attachment(str(i), str(c)) for i, c in raw["attachments"])
    return ExportEntry(parse_dataset(raw["dataset"]), int(raw["export_id"]), str(raw["path"]), (), atts)


class GaneshaExports:
    """The driver's exports on one node's ganesha, and the attachments granted each of them."""

    def __init__(
        self,
        host: Host,
        exports_file: str,
        pid_file: str,
        protocols: Sequence[int] = (3, 4),
        security: ExportSecurity | None = None,
        node_bin: str = "zfs-backend",
    ) -> None:
        self.host = host
        self.exports_file = exports_file
        self.pid_file = pid_file
        self.protocols = tuple(protocols)
        self.security = security or ExportSecurity()
        self.node_bin = node_bin

    # ---- reading ------------------------------------------------------------------------------

    def _read(self) -> str:
        res = self.host.run(["cat", self.exports_file], check=False)
        if res.returncode != 0:
            raise ConfigError(
                f"{self.host.name}: cannot read the NFS exports file {self.exports_file}: "
                f"{res.err_text.strip() or 'exit ' + str(res.returncode)} (is nfs-ganesha set up?)"
            )
        return res.text

    def entries(self) -> dict[str, ExportEntry]:
        return parse_exports(self._read())[0]

    def get(self, dataset: DatasetName) -> ExportEntry | None:
        return self.entries().get(str(dataset))

    def server_pid(self) -> int | None:
        """The server's pid when it is running, else None."""
        res = self.host.run(["cat", self.pid_file], check=False)
        text = res.text.strip()
        if res.returncode != 0 or not text.isdigit():
            return None
        if self.host.run(["kill", "-0", text], check=False).returncode != 0:
            return None
        return int(text)

    # ---- changes ------------------------------------------------------------------------------

    def render(self, entries: dict[str, ExportEntry], rest: str) -> str:
        """The whole file: the foreign text, then the driver's blocks by Export_Id."""
        return render_file(entries, rest, self.protocols, self.security)

    def _change(self, op: str, dataset: DatasetName, **fields: Any) -> dict[str, Any]:
        """Apply one change on the node, under its lock (:mod:`.exports_node`); its result."""
        request = {
            "file": self.exports_file,
            "pid_file": self.pid_file,
            "protocols": list(self.protocols),
            "security": [self.security.root_squash, self.security.anonymous_uid, self.security.anonymous_gid],
            "op": op,
            "dataset": str(dataset),
            **fields,
        }
        answer = node_command(self.host, [self.node_bin, "exports-change"], json.dumps(request).encode())
        result = answer.get("result")
        if not isinstance(result, dict):
            raise ConfigError(f"{self.host.name}: exports-change answered no result")
        return result

    def add(
        self,
        dataset: DatasetName,
        path: str,
        clients: Iterable[str] = (),
        attachments: Iterable[Attachment] = (),
    ) -> ExportEntry:
        """Export ``dataset`` (mounted at ``path``); idempotent: an existing export keeps its attachments
        (``attachments``, and the default attachment of each of ``clients``, are added). A new export
        grants nobody else."""
        validate_export_path(path)
        wanted = ExportEntry(dataset, 0, path, canonical_clients(clients), tuple(attachments))
        atts = [[a.id, a.client] for a in wanted.attachments]
        entry = _entry(self._change("add", dataset, path=path, attachments=atts).get("entry"))
        if entry is None:
            raise ConfigError(f"{self.host.name}: exports-change did not export {dataset}")
        return entry

    def remove(self, dataset: DatasetName) -> ExportEntry | None:
        """Unexport ``dataset`` (its grants go with it); returns the entry it had, None when it was not
        exported."""
        return _entry(self._change("remove", dataset).get("removed"))

    def remove_unattached(self, dataset: DatasetName) -> ExportEntry | None:
        """Unexport ``dataset`` only when no attachment is left (checked under the node's lock); returns
        the entry removed, None when it was kept (or was not exported)."""
        return _entry(self._change("remove", dataset, only_unattached=True).get("removed"))

    def attach(self, dataset: DatasetName, client: str, attachment: str | None = None) -> ExportEntry | None:
        """Record attachment ``attachment`` (default: ``client``'s default attachment) of ``client`` and
        give the address read-write access; idempotent. None (and no change) when ``dataset`` is not
        exported. InvalidAttachment when that id is attached from another address."""
        address = validate_client(client)
        att = default_attachment(address) if attachment is None else validate_attachment_id(attachment)
        Attachment(att, address)
        return _entry(self._change("attach", dataset, attachment=att, client=address).get("entry"))

    def grant(self, dataset: DatasetName, address: str) -> ExportEntry | None:
        """Give ``address`` read-write access through its default attachment (see :meth:`attach`)."""
        return self.attach(dataset, address)

    def detach(
        self, dataset: DatasetName, *, attachment: str | None = None, client: str | None = None
    ) -> tuple[list[Attachment], tuple[str, ...]]:
        """End attachments of ``dataset``: the one named ``attachment``, every one of ``client``, or (both
        None) every one. Returns (the attachments ended, the addresses no longer granted): an address
        another attachment still holds stays granted. Nothing to end is not an error."""
        fields: dict[str, Any] = {}
        if attachment is not None:
            fields["attachment"] = validate_attachment_id(attachment)
        if client is not None:
            fields["client"] = validate_client(client)
        result = self._change("detach", dataset, **fields)
        ended = [Attachment(str(i), str(c)) for i, c in result.get("detached", [])]
        return ended, tuple(validate_client(c) for c in result.get("revoked", []))

    def revoke(self, dataset: DatasetName, address: str) -> tuple[str, ...]:
        """Take access to the export of ``dataset`` away from ``address`` (every attachment of it).
        Returns the addresses revoked (empty when it was not granted or ``dataset`` is not exported)."""
        return self.detach(dataset, client=validate_client(address))[1]

    def revoke_all(self, dataset: DatasetName) -> tuple[str, ...]:
        """Take access to the export of ``dataset`` away from every client; returns who had it."""
        return self.detach(dataset)[1]
