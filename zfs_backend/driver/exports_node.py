"""The node's side of an exports change: ``zfs-backend exports-change`` reads one change as JSON on stdin,
applies it to the exports file under a lock, and answers JSON on stdout.

Several controller processes (cinder-volume backends, the CLI, conductors) change one node's exports
file, each over its own SSH session. Every change is a read-modify-write, so it runs here, on the node,
whole, under an exclusive ``flock`` on ``<file>.lock`` (beside the file, 0600): read, parse, apply,
and when the text differs write a temporary file of a unique name (``<file>.<16 hex>.tmp``,
``O_CREAT|O_EXCL|O_NOFOLLOW``, the file's mode, 0644 when new), ``fsync`` it, rename it over the file,
``fsync`` the directory, and send the server one ``SIGHUP`` — all before the lock is released. So no
change is lost to another (each starts from the one before it), a reader sees the old or the new file
and never a part, and ganesha reloads once per change. Temporary files left by a writer that died are
removed under the lock (only names of that exact pattern).

The change is data, never a shell string: :func:`parse_request` validates every field (paths, dataset,
addresses, attachment ids, protocols, squashing) before the file is opened. The pure part,
:func:`change_text`, is what the unit tests' fake node runs too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, UsageError, ZfsBackendError
from ..zfs.names import DatasetName, parse_dataset
from .errors import InvalidAttachment
from .exports_format import (
    ID_LINE,
    MAX_EXPORT_ID,
    MIN_EXPORT_ID,
    Attachment,
    ExportEntry,
    ExportSecurity,
    parse_exports,
    render_file,
    validate_attachment_id,
    validate_client,
    validate_export_path,
)

__all__ = ["OPS", "ChangeRequest", "apply_change", "change_text", "entry_json", "main", "parse_request"]

OPS = ("add", "remove", "attach", "detach")
_PATH = re.compile(r"/[A-Za-z0-9_.:/-]+")


def _path(value: object, what: str) -> str:
    if not isinstance(value, str) or not _PATH.fullmatch(value) or "/../" in f"{value}/":
        raise UsageError(f"invalid {what} {ascii(value)[:80]}: expected an absolute path")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"invalid {what} {ascii(value)[:80]}: expected a string")
    return value


@dataclass(frozen=True)
class ChangeRequest:
    """One validated change: which file, how blocks are rendered, and the operation."""

    file: str
    pid_file: str
    protocols: tuple[int, ...]
    security: ExportSecurity
    op: str
    dataset: DatasetName
    path: str | None = None
    attachments: tuple[Attachment, ...] = ()
    attachment: str | None = None
    client: str | None = None
    only_unattached: bool = False


def parse_request(raw: Mapping[str, Any]) -> ChangeRequest:
    """The request in ``raw`` (decoded JSON), every field validated; UsageError names the first bad one."""
    if not isinstance(raw, Mapping):
        raise UsageError("an exports change is a JSON object")
    op = raw.get("op")
    if op not in OPS:
        raise UsageError(f"unknown exports change {ascii(op)[:40]}: expected one of {', '.join(OPS)}")
    protocols = raw.get("protocols")
    if not isinstance(protocols, list) or not protocols or any(p not in (3, 4) for p in protocols):
        raise UsageError("invalid protocols: expected a list of 3 and/or 4")
    sec = raw.get("security")
    if not isinstance(sec, list) or len(sec) != 3:
        raise UsageError("invalid security: expected [root_squash, anonymous_uid, anonymous_gid]")
    try:
        security = ExportSecurity(*sec)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    path = raw.get("path")
    atts = raw.get("attachments", [])
    if not isinstance(atts, list) or any(not isinstance(a, list) or len(a) != 2 for a in atts):
        raise UsageError("invalid attachments: expected a list of [id, client]")
    attachment, client = raw.get("attachment"), raw.get("client")
    only = raw.get("only_unattached", False)
    if not isinstance(only, bool):
        raise UsageError("invalid only_unattached: expected true or false")
    return ChangeRequest(
        file=_path(raw.get("file"), "exports file"),
        pid_file=_path(raw.get("pid_file"), "pid file"),
        protocols=tuple(int(p) for p in protocols),
        security=security,
        op=str(op),
        dataset=parse_dataset(_text(raw.get("dataset"), "dataset")),
        path=None if path is None else validate_export_path(path),
        attachments=tuple(Attachment(a[0], a[1]) for a in atts),
        attachment=None if attachment is None else validate_attachment_id(attachment),
        client=None if client is None else validate_client(client),
        only_unattached=only,
    )


def entry_json(entry: ExportEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "dataset": str(entry.dataset),
        "export_id": entry.export_id,
        "path": entry.path,
        "attachments": [[a.id, a.client] for a in entry.attachments],
    }


def _free_id(entries: dict[str, ExportEntry], rest: str) -> int:
    used = {e.export_id for e in entries.values()} | {int(x) for x in ID_LINE.findall(rest)}
    return next((i for i in range(MIN_EXPORT_ID, MAX_EXPORT_ID + 1) if i not in used), 0)


def _apply(req: ChangeRequest, entries: dict[str, ExportEntry], rest: str) -> dict[str, Any]:
    """Change ``entries`` in place as ``req`` says; returns the operation's own result."""
    key = str(req.dataset)
    current = entries.get(key)
    if req.op == "add":
        if req.path is None:
            raise UsageError("add needs the export's path")
        if current is not None:
            entries[key] = ExportEntry(
                req.dataset, current.export_id, req.path, (), (*current.attachments, *req.attachments)
            )
        else:
            export_id = _free_id(entries, rest)
            if not export_id:
                raise ConfigError("no free NFS Export_Id left")
            entries[key] = ExportEntry(req.dataset, export_id, req.path, (), req.attachments)
        return {"entry": entry_json(entries[key])}
    if req.op == "remove":
        if current is None or (req.only_unattached and current.attachments):
            return {"removed": None, "kept": entry_json(current)}
        del entries[key]
        return {"removed": entry_json(current)}
    if req.op == "attach":
        if req.attachment is None or req.client is None:
            raise UsageError("attach needs an attachment id and a client")
        if current is not None:
            new = Attachment(req.attachment, req.client)
            held = {a.id: a for a in current.attachments}.get(new.id)
            if held is not None and held.client != new.client:
                raise InvalidAttachment(f"attachment {new.id} is already attached from {held.client}")
            entries[key] = ExportEntry(
                req.dataset, current.export_id, current.path, (), (*current.attachments, new)
            )
        return {"entry": entry_json(entries.get(key))}
    # detach: one attachment (by id), every attachment of a client, or every attachment
    if current is None:
        return {"detached": [], "revoked": []}
    gone = [
        a
        for a in current.attachments
        if (req.attachment is None or a.id == req.attachment)
        and (req.client is None or a.client == req.client)
    ]
    keep = tuple(a for a in current.attachments if a not in gone)
    entries[key] = ExportEntry(req.dataset, current.export_id, current.path, (), keep)
    revoked = [c for c in current.clients if c not in entries[key].clients]
    return {"detached": [[a.id, a.client] for a in gone], "revoked": revoked}


def change_text(text: str, req: ChangeRequest) -> tuple[str, dict[str, Any]]:
    """The file's new text after ``req`` and the answer (``result``, and ``entries`` after it)."""
    entries, rest = parse_exports(text)
    result = _apply(req, entries, rest)
    body = render_file(entries, rest, req.protocols, req.security)
    answer = {"result": result, "changed": body != text, "entries": [entry_json(e) for e in entries.values()]}
    return body, answer


_TMP = re.compile(r"\.[0-9a-f]{16}\.tmp")


def _write_atomically(path: str, body: str) -> None:
    """``body`` into ``path`` by a unique temporary file, fsynced, renamed over it; the directory
    fsynced. Keeps the file's mode (0644 when it is new)."""
    directory, base = os.path.split(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    for name in os.listdir(directory or "/"):  # a writer that died held the lock we hold now
        if name.startswith(base) and _TMP.fullmatch(name[len(base) :]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        data = body.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory or "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _reload(pid_file: str) -> None:
    """SIGHUP the server named by ``pid_file``."""
    try:
        with open(pid_file) as f:
            text = f.read().strip()
        if not text.isdigit():
            raise ProcessLookupError
        os.kill(int(text), signal.SIGHUP)
    except (OSError, ProcessLookupError):
        raise ConfigError(f"the NFS server (nfs-ganesha) is not running ({pid_file})") from None


def apply_change(req: ChangeRequest, reload: Callable[[str], None] = _reload) -> dict[str, Any]:
    """Apply ``req`` to its file under the node's lock (see the module's docstring)."""
    lock = os.open(f"{req.file}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(req.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(
                f"cannot read the NFS exports file {req.file}: {e.strerror} (is nfs-ganesha set up?)"
            ) from None
        body, answer = change_text(text, req)
        if answer["changed"]:
            _write_atomically(req.file, body)
            reload(req.pid_file)
        return answer
    finally:
        os.close(lock)  # releases the lock


def main(stdin: Any, stdout: Any) -> int:
    """The command: one JSON request in, one JSON answer out (``{"error", "type"}`` and the error's exit
    code when refused or failed). A change once begun is finished even when the controller's SSH session
    goes away (sshd's SIGHUP is ignored): the file and the server's reload never part."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return _main(stdin, stdout)
    finally:
        signal.signal(signal.SIGHUP, old)


def _main(stdin: Any, stdout: Any) -> int:
    try:
        try:
            raw = json.loads(stdin.read())
        except (ValueError, UnicodeDecodeError):
            raise UsageError("an exports change is one JSON object on stdin") from None
        try:
            answer = apply_change(parse_request(raw))
        except OSError as e:
            raise ConfigError(f"exports change: {e.strerror} ({e.filename})") from None
        json.dump(answer, stdout)
        return 0
    except ZfsBackendError as e:
        json.dump({"error": str(e), "type": type(e).__name__}, stdout)
        return e.exit_code
