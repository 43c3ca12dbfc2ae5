"""Typed, frozen settings and their loader. No other module reads the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .node_sockets import PEER_SOCKET_NAME, agent_socket_path

__all__ = ["Settings", "load_env_file", "load_settings"]

DEFAULT_HOME = "/var/lib/zfs-backend"
DEFAULT_LAB_NETWORK = "198.18.0.0/24"


@dataclass(frozen=True)
class Settings:
    """Where state lives and how the controller reaches nodes.

    ``home``: root of all state (``$ZFS_BACKEND_HOME``).
    ``inventory``: the ansible-format YAML inventory naming the nodes (``$ZFS_BACKEND_INVENTORY``,
    default: the lab's).
    ``lab_network``: the lab's IPv4 network (``$ZFS_BACKEND_LAB_NETWORK``).
    ``ssh_cipher``: cipher for bulk streams over OpenSSH (``$ZFS_BACKEND_SSH_CIPHER``).
    ``ssh_persist_s``: how long an idle SSH master connection to a node is kept for the next command
    (``$ZFS_BACKEND_SSH_PERSIST``, seconds, default 600; 0 = no reuse).
    ``agent_socket``: the node agent's unix socket (``$ZFS_BACKEND_AGENT_SOCKET``); beside it
    ``peer.sock``, the socket peer nodes reach (replication's receiving end only).
    ``flow_persistence``: TaskFlow's persistence backend, an SQLAlchemy URL (``$ZFS_BACKEND_FLOW_DB``,
    default ``sqlite:///<home>/flows.db``).
    ``jobboard``: the Redis jobboard flows are posted to for ``zfs-backend conductor`` processes
    (``$ZFS_BACKEND_JOBBOARD``, e.g. ``redis://127.0.0.1:6390/0``); empty: flows run in the command.
    ``jobboard_password``: the file holding its Redis password (``$ZFS_BACKEND_JOBBOARD_PASSWORD_FILE``,
    default ``<home>/jobboard/password``, where ``zfs-backend jobboard up`` writes it; 0600, the caller's
    own: see ``flows.redis_auth``).
    ``replica_roots``: the datasets replicas from peer nodes may live under (``$ZFS_BACKEND_REPLICA_ROOTS``,
    comma-separated); a replica lies **strictly** under a root, never a root itself. Empty (unset): this
    node accepts no work from peers at all (every grant, receive, lock, prune and rollback a peer asks for
    is refused); the lab and the ansible role set it.
    ``activity_keep`` / ``activity_keep_days``: the node agent's retention of finished activities
    (``$ZFS_BACKEND_ACTIVITY_KEEP``, default 10000, at least 1; ``$ZFS_BACKEND_ACTIVITY_KEEP_DAYS``,
    default 30, at least 1): it keeps the ``activity_keep`` that finished last, and none finished more
    than ``activity_keep_days`` ago; a non-terminal activity is never pruned (``agent.retention``).
    ``replication_transport``: how replication streams cross between nodes by default
    (``$ZFS_BACKEND_REPLICATION_TRANSPORT``: ``ssh``, the default, or ``tls``, the TLS data channel
    between the nodes' certificates, see ``replication.tls_channel``).
    ``claim_lease_s``: how long a claim on this node's datasets (a replication's, a standby's receiving
    end) lives without its source renewing it (``$ZFS_BACKEND_CLAIM_LEASE_S``, seconds, default 300,
    from 120: a source renews every 60 s); a lapsed claim is stale: its holds are released by
    ``holds --release-stale`` and another replication may take the dataset.
    ``cinder_port_base``: first of the loopback ports of the small Cinder of ``scripts/cinder-up``
    (``$ZFS_BACKEND_CINDER_PORT_BASE``; None: derived from ``lab_network``, see ``zfs_backend.cinderlab``).
    """

    home: Path
    inventory: Path
    lab_network: str
    ssh_cipher: str
    agent_socket: Path
    ssh_persist_s: int = 600
    flow_persistence: str = ""
    jobboard: str = ""
    jobboard_password: Path | None = None
    replica_roots: tuple[str, ...] = ()
    activity_keep: int = 10_000
    activity_keep_days: int = 30
    replication_transport: str = "ssh"
    claim_lease_s: int = 300

    @property
    def jobboard_password_file(self) -> Path:
        return self.jobboard_password or self.home / "jobboard" / "password"

    @property
    def flow_db(self) -> str:
        """The persistence URL flows use (the default: SQLite in the home)."""
        return self.flow_persistence or f"sqlite:///{self.home / 'flows.db'}"

    cinder_port_base: int | None = None

    @property
    def lab_dir(self) -> Path:
        return self.home / "lab"

    @property
    def agent_dir(self) -> Path:
        return self.home / "agent"

    @property
    def ssh_dir(self) -> Path:
        """Private directory of the controller's SSH master connections and forwarded sockets."""
        return self.home / "ssh"

    @property
    def backup_dir(self) -> Path:
        """Where a backup node keeps volume backups (stream files and manifests)."""
        return self.home / "backups"

    @property
    def peer_socket(self) -> Path:
        return self.agent_socket.with_name(PEER_SOCKET_NAME)


def _int(env: dict[str, str] | os._Environ[str], key: str, default: int, high: int) -> int:
    """``$key`` as a whole number from 0 to ``high`` (``default`` when unset or empty)."""
    value = env.get(key)
    if value is None or value == "":
        return default
    shown = repr(value if len(value) <= 20 else value[:20] + "...")
    if not re.fullmatch(r"[0-9]{1,12}", value.strip()) or int(value) > high:
        raise ConfigError(f"${key} must be a whole number from 0 to {high}, not {shown}")
    return int(value)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    home = Path(e.get("ZFS_BACKEND_HOME", DEFAULT_HOME))
    return Settings(
        home=home,
        inventory=Path(e.get("ZFS_BACKEND_INVENTORY", str(home / "lab" / "inventory.yml"))),
        lab_network=e.get("ZFS_BACKEND_LAB_NETWORK", DEFAULT_LAB_NETWORK),
        ssh_cipher=e.get("ZFS_BACKEND_SSH_CIPHER", "aes128-gcm@openssh.com"),
        agent_socket=Path(agent_socket_path(e)),
        ssh_persist_s=_int(e, "ZFS_BACKEND_SSH_PERSIST", 600, 7 * 86400),
        flow_persistence=e.get("ZFS_BACKEND_FLOW_DB", ""),
        jobboard=e.get("ZFS_BACKEND_JOBBOARD", ""),
        jobboard_password=Path(e["ZFS_BACKEND_JOBBOARD_PASSWORD_FILE"])
        if e.get("ZFS_BACKEND_JOBBOARD_PASSWORD_FILE")
        else None,
        cinder_port_base=_int(e, "ZFS_BACKEND_CINDER_PORT_BASE", 0, 65535) or None,
        replica_roots=_roots(e.get("ZFS_BACKEND_REPLICA_ROOTS", "")),
        activity_keep=_positive(e, "ZFS_BACKEND_ACTIVITY_KEEP", 10_000, 100_000_000),
        activity_keep_days=_positive(e, "ZFS_BACKEND_ACTIVITY_KEEP_DAYS", 30, 36_500),
        replication_transport=_transport(e.get("ZFS_BACKEND_REPLICATION_TRANSPORT", "")),
        claim_lease_s=_lease(e),
    )


#: a source renews its claim every 60 s (``replication.upkeep``): a lease of at least two such periods
MIN_CLAIM_LEASE_S = 120


def _lease(env: dict[str, str] | os._Environ[str]) -> int:
    """``$ZFS_BACKEND_CLAIM_LEASE_S``: from ``MIN_CLAIM_LEASE_S`` to a day."""
    value = _int(env, "ZFS_BACKEND_CLAIM_LEASE_S", 300, 86_400)
    if value < MIN_CLAIM_LEASE_S:
        raise ConfigError(
            f"$ZFS_BACKEND_CLAIM_LEASE_S must be from {MIN_CLAIM_LEASE_S} to 86400 seconds (a source renews "
            f"its claim every 60 s), not {value}"
        )
    return value


def _transport(value: str) -> str:
    """``$ZFS_BACKEND_REPLICATION_TRANSPORT``: ``ssh`` (default) or ``tls``."""
    value = value.strip() or "ssh"
    if value not in ("ssh", "tls"):
        raise ConfigError(f"$ZFS_BACKEND_REPLICATION_TRANSPORT must be ssh or tls, not {value[:20]!r}")
    return value


def _positive(env: dict[str, str] | os._Environ[str], key: str, default: int, high: int) -> int:
    """``$key`` as a whole number from 1 to ``high``."""
    value = _int(env, key, default, high)
    if value < 1:
        raise ConfigError(f"${key} must be a whole number from 1 to {high}, not 0")
    return value


_ROOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(?:/[A-Za-z0-9_.:-]+)*")


def _roots(value: str) -> tuple[str, ...]:
    """``$ZFS_BACKEND_REPLICA_ROOTS``: comma-separated dataset names (checked again by the agent)."""
    out = []
    for part in value.split(","):
        root = part.strip()
        if not root:
            continue
        if not _ROOT.fullmatch(root) or len(root) > 255 or {".", ".."} & set(root.split("/")):
            raise ConfigError(f"$ZFS_BACKEND_REPLICA_ROOTS: {root[:80]!r} is not a dataset name")
        out.append(root)
    return tuple(out)


_ENV_LINE = re.compile(r"([A-Z_][A-Z0-9_]*)=(.*)")


def load_env_file(path: Path) -> dict[str, str]:
    """Read a systemd-style ``EnvironmentFile`` (``KEY=VALUE`` lines, ``#`` comments, optional quotes):
    the node agent's configuration, shared by its systemd unit and ``zfs-backend agent --daemon``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read environment file {path}: {e.strerror or e}") from None
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(line)
        if m is None:
            raise ConfigError(f"{path} line {n}: expected KEY=VALUE, got {line[:60]!r}")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[m.group(1)] = value
    return out
