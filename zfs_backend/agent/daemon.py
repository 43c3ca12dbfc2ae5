"""The node agent: an ``ActivityManager`` behind a root-only unix socket.

* Sockets: ``Settings.agent_socket`` (default ``/run/zfs-backend/agent.sock``) serves every op;
  ``Settings.peer_socket`` (``peer.sock`` beside it) serves only what peer nodes may ask
  (``protocol.PEER_OPS``: the receiving end of replications), and only in a **peer session**: its first
  line must be ``peer.hello`` naming the peer (written by ``peer-exec --peer NODE``, the forced command
  of that node's key); any op before it, or a second hello, ends the session with one error line. What a
  peer may then do is ``replication.authority``'s (the controller's grants, the replica roots). Both
  sockets mode 0600 in a directory created 0700 (an existing one keeps its mode: the agent never
  changes the mode of a directory it did not create); a client whose uid is neither root nor the
  agent's is refused (``SO_PEERCRED``) before any request is read.
* Files: the store, claims, log and lock are created 0600 in directories created 0700
  (``zfs_backend.private``).
* State: ``Settings.agent_dir / "activities.db"`` (SQLite, see ``activity.store``); log: JSON lines
  to ``Settings.agent_dir / "agent.log"`` and to stderr.
* On start it carries every stored non-terminal activity on (that is what makes them self-restarting).
  A SIGKILLed agent loses nothing: the next start resumes each stream from its persisted checkpoint.
* SIGTERM/SIGINT (or the ``shutdown`` op): stop accepting, then *detach* every activity — stop its
  producer, let its consumer drain what it already received, persist the counters — and leave the
  records non-terminal (``running``/``suspended``/…), so the next start carries them on. Nothing is
  rolled back or marked failed by a shutdown.

Its log (JSON lines) is set up by :mod:`.logs`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import AgentUnavailable, ProtocolError, UsageError
from ..hosts.base import Host
from ..hosts.local import LocalHost
from ..private import private_dir, private_open
from ..replication.compress import available_codecs
from ..replication.tls_channel import tls_ready
from ..rpc.protocol import (
    BACKUP_OPS,
    GRANT_OPS,
    HELLO_OP,
    MAX_LINE,
    MAX_WAIT_S,
    OPS,
    PEER_OPS,
    PROTOCOL_VERSION,
    RECV_OPS,
    decode,
    encode,
    list_window,
    response,
)
from ..zfs import lzc
from ..zfs.names import validate_node
from .logs import setup_logging
from .manager import ActivityManager

__all__ = ["AgentServer", "run_agent"]

REFUSED_LINGER_S = 2.0  # how long a refused peer's bytes are discarded before hanging up
REFUSED_DRAIN = 1 << 20


class _Handler(socketserver.StreamRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        if not self.server.peer_allowed(self.connection):
            self._refuse()
            return
        peer: str | None = None
        if self.server.hello_required:
            peer = self._hello()
            if peer is None:
                return
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if not line.strip():
                continue
            req_id: Any = None
            try:
                req = decode(line)
                req_id = req.get("id")
                op = str(req.get("op", ""))
                if op == HELLO_OP and self.server.hello_required:
                    self._send(response(req_id, error=ProtocolError("a second peer.hello is refused")))
                    return
                result = self.server.dispatch(op, req.get("args") or {}, peer=peer)
                out = response(req_id, result)
            except Exception as e:
                if not isinstance(e, (ProtocolError, UsageError)) and not hasattr(e, "exit_code"):
                    self.server.log.exception("request failed")
                out = response(req_id, error=e)
            if not self._send(out):
                return
            if req_id is not None and out.get("result") == {"shutdown": True}:
                self.server.request_stop()

    def _send(self, out: dict[str, Any]) -> bool:
        try:
            self.wfile.write(encode(out))
            self.wfile.flush()
        except OSError:
            return False
        return True

    def _hello(self) -> str | None:
        """A peer session's first line: ``peer.hello`` naming the peer (written by ``peer-exec``, never
        by the peer). Anything else ends the session with one error line."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        req_id: Any = None
        try:
            req = decode(line)
            req_id = req.get("id")
            args = req.get("args")
            if req.get("op") != HELLO_OP or not isinstance(args, dict):
                raise ProtocolError("a peer session must begin with peer.hello (peer-exec --peer NODE)")
            peer = validate_node(str(args.get("peer", "")))
        except Exception as e:
            self._send(response(req_id, error=e))
            return None
        return peer if self._send(response(req_id, {"peer": peer})) else None

    def _refuse(self) -> None:
        """Answer "permission denied" and hang up without reading a single request. What the peer sent
        is discarded unread (at most ``REFUSED_DRAIN`` bytes, for at most ``REFUSED_LINGER_S``): closing
        with unread bytes would reset the connection, and the peer would see a reset or a broken pipe
        instead of the answer."""
        with contextlib.suppress(OSError):
            self.wfile.write(encode(response(None, error=AgentUnavailable("permission denied"))))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(REFUSED_LINGER_S)
            left = REFUSED_DRAIN
            while left > 0 and (chunk := self.connection.recv(min(65536, left))):
                left -= len(chunk)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self,
        socket_path: Path,
        manager: ActivityManager,
        log: logging.Logger,
        *,
        ops: frozenset[str] = OPS,
        hello_required: bool = False,
    ) -> None:
        self.socket_path = socket_path
        self.manager = manager
        self.log = log
        self.ops = ops
        self.hello_required = hello_required
        self._stopping = threading.Event()
        _prepare_socket_path(socket_path)
        old = os.umask(0o177)
        try:
            super().__init__(str(socket_path), _Handler)
        finally:
            os.umask(old)
        os.chmod(socket_path, 0o600)

    def peer_allowed(self, conn: socket.socket) -> bool:
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except OSError:
            return False
        return uid in (0, os.getuid())

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            threading.Thread(target=self.shutdown, name="agent-stop", daemon=True).start()

    def dispatch(self, op: str, args: dict[str, Any], peer: str | None = None) -> Any:
        """One request; ``peer``: the peer node of a peer session (its ``peer.hello``), None on the
        controller's socket."""
        if op not in self.ops:
            raise ProtocolError(f"unknown op {op!r}" if op not in OPS else f"op {op!r} is not allowed here")
        if not isinstance(args, dict):
            raise ProtocolError("args must be a JSON object")
        m = self.manager
        if op == "ping":
            return {
                "agent": "zfs-backend",
                "protocol": PROTOCOL_VERSION,
                "node": m.ctx.node,
                "pid": os.getpid(),
                "active": m.live_count(),
                "codecs": available_codecs(),
                "tls": tls_ready(),
                "libzfs_core": lzc.available(),  # this process serves local calls through pyzfs
            }
        if op == "kinds":
            return m.kinds()
        if op == "shutdown":
            return {"shutdown": True}
        if op in RECV_OPS:
            return m.receive(op.removeprefix("recv."), args, peer=peer)
        if op in BACKUP_OPS:
            return m.backup(op.removeprefix("backup."), args, peer=peer)
        if op in GRANT_OPS:
            if peer is not None:  # never: GRANT_OPS are not PEER_OPS; belt and braces
                raise ProtocolError(f"op {op!r} is not allowed here")
            return m.grant(op.removeprefix("grant."), args)
        if op == "peer.admit":
            return m.admit(peer, args)
        if op == "start":
            return m.start(str(args.get("kind", "")), args.get("params") or {}).to_dict()
        if op == "list":
            limit, since = list_window(args)
            return [r.to_dict() for r in m.list(args.get("state"), limit=limit, since=since)]
        if op == "holds":
            return m.holds(args.get("release_stale", False))
        aid = args.get("id")
        if not isinstance(aid, str) or not aid:
            raise ProtocolError(f"op {op!r} needs an activity id")
        if op == "get":
            return m.get(aid).to_dict()
        if op == "events":
            return m.events(aid)
        if op == "set":
            return m.set(aid, args).to_dict()
        if op == "wait":
            timeout = args.get("timeout")
            t = MAX_WAIT_S if timeout is None else min(float(timeout), MAX_WAIT_S)
            return m.wait(aid, max(0.0, t)).to_dict()
        verb: Callable[[str], Any] = {"suspend": m.suspend, "resume": m.resume, "cancel": m.cancel}[op]
        return verb(aid).to_dict()


def _prepare_socket_path(path: Path) -> None:
    """The socket's directory (created 0700 if missing; an existing one keeps its mode: the socket itself
    is 0600 and peers are checked by uid), and no stale socket of a dead agent in the way."""
    private_dir(path.parent)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a dead agent
        else:
            raise AgentUnavailable(f"another agent is already listening on {path}")
        finally:
            probe.close()


def run_agent(
    settings: Settings,
    *,
    socket_path: Path | None = None,
    db_path: Path | None = None,
    log_path: Path | None = None,
    node: str | None = None,
    host_for: Callable[[str], Host] | None = None,
    log_stderr: bool = True,
    ready: Callable[[], None] | None = None,
    test_kinds: bool = False,
    metrics_address: str | None = None,
    metrics_port: int = 0,
) -> int:
    """Run the agent in the foreground until SIGTERM/SIGINT or a ``shutdown`` request. Returns the
    exit code (0). For ``zfs-backend agent``. ``test_kinds``: also host the generic ``pipeline`` kind.
    ``metrics_port`` > 0: Prometheus metrics on ``metrics_address:metrics_port`` (``agent.metrics``)."""
    from ..activity.store import ActivityStore
    from ..kinds.backupstore import BackupStore
    from ..replication.authority import PeerAuthority
    from ..replication.claims import ClaimStore
    from ..replication.grants import GrantStore
    from ..replication.receiver import Receiver
    from ..zfs.api import Zfs
    from .peers import PeerAgents
    from .retention import Pruner, Retention

    sock = socket_path or settings.agent_socket
    peer_sock = sock.with_name("peer.sock")
    db = db_path or settings.agent_dir / "activities.db"
    log = setup_logging(log_path or settings.agent_dir / "agent.log", stderr=log_stderr)
    lock_fd = _single_instance(db.with_name(db.name + ".lock"))
    store = ActivityStore(db)
    claims = ClaimStore(db.with_name("claims.db"))
    grants = GrantStore(db.with_name("grants.db"))
    name = node or socket.gethostname()
    peers = PeerAgents(settings)
    zfs = Zfs(LocalHost(name))
    manager = ActivityManager(
        store,
        node=name,
        host_for=host_for,
        log=log,
        receiver=Receiver(zfs, claims, grants=grants, ttl=settings.claim_lease_s),
        peer=peers,
        test_kinds=test_kinds,
        backups=BackupStore(settings.backup_dir),
        authority=PeerAuthority(grants, claims, settings.replica_roots, dialect=lambda: zfs.dialect),
    )
    server = AgentServer(sock, manager, log)
    peer_server = AgentServer(peer_sock, manager, log, ops=PEER_OPS, hello_required=True)
    threading.Thread(target=peer_server.serve_forever, args=(0.2,), name="agent-peers", daemon=True).start()

    def stop() -> None:
        server.request_stop()
        peer_server.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop())
    metrics = None
    if metrics_port > 0:
        from .metrics import serve_metrics

        metrics, _ = serve_metrics(manager, metrics_address or "127.0.0.1", metrics_port)
    carried = manager.recover()
    pruner = Pruner(store, Retention.from_settings(settings), log)
    pruner.start()
    log.info(
        "agent started", extra={"socket": str(sock), "db": str(db), "carried_on": carried, "pid": os.getpid()}
    )
    if ready is not None:
        ready()
    t0 = time.monotonic()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        peer_server.request_stop()
        server.server_close()
        peer_server.server_close()
        for path in (sock, peer_sock):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if metrics is not None:
            metrics.shutdown()
        pruner.stop()
        manager.shutdown()
        peers.close()
        store.close()
        claims.close()
        grants.close()
        log.info("agent stopped", extra={"uptime_s": round(time.monotonic() - t0, 1)})
        os.close(lock_fd)
    return 0


def _single_instance(lock_path: Path, wait_s: float = 30.0) -> int:
    """One agent per store: an exclusive ``flock`` (released by the kernel even on SIGKILL). Waits
    ``wait_s`` for a previous agent that is still shutting down."""
    private_dir(lock_path.parent)
    fd = private_open(lock_path, os.O_RDWR)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise AgentUnavailable(f"another agent holds {lock_path}") from None
            time.sleep(0.1)
