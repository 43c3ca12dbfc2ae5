"""Where the small Cinder lives and what its configuration files say: pure, no process is started here.

Everything is under ``$ZFS_BACKEND_HOME/cinder`` (0700; files 0600): ``cinder.conf``, ``mysql/``
(MariaDB's data directory) and ``db.password`` (its ``cinder`` user's), ``log/`` (Cinder's own logs and
each process's output), ``run/`` (one pid record per process), ``lock/`` and ``rabbitmq/`` (the broker's
``HOME``, configuration, Mnesia database and logs).

Ports, all on 127.0.0.1, from a base (``$ZFS_BACKEND_CINDER_PORT_BASE``; default ``23000 + 10 x`` the
third octet of the lab network, so the default lab 198.18.0.0/24 gets 23000-23003 and two labs on
different networks get different ports): base + 0 cinder-api, + 1 AMQP (RabbitMQ), + 2 Erlang
distribution (RabbitMQ's inter-node port, used by nothing but its own tools), + 3 epmd (Erlang's port
mapper, started here on loopback instead of the system-wide one on 4369), + 4 keystone (its WSGI
application under gunicorn: the identity service cinder-api authenticates every request with, see
:mod:`.keystone`; state in ``keystone/``, its database ``keystone`` on the same MariaDB).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..zfs.names import validate_node

__all__ = [
    "CINDER_PARENT",
    "LOOPBACK",
    "PROJECT_ID",
    "CinderLayout",
    "Ports",
    "backend_name",
    "cinder_conf",
    "default_port_base",
    "rabbitmq_conf",
]

LOOPBACK = "127.0.0.1"
CINDER_PARENT = "tank/cinder-volumes"  # each node's dataset of Cinder's volumes
HOST = "zfs-backend-cinder"  # cinder's [DEFAULT] host: services are HOST, HOST@<backend>
RABBIT_USER = "zfs-backend"
# noauth: a token "USER:PROJECT" is an admin of PROJECT, and URLs may carry the project id
# (/v3/PROJECT/volumes, as python-cinderclient's noauth plugin makes them), which must be hex
PROJECT_ID = "5a11c1de000000000000000000000001"


def default_port_base(lab_network: str) -> int:
    """``23000 + 10 x`` the third octet of the lab's network (below Linux's ephemeral ports)."""
    try:
        net = ipaddress.ip_network(lab_network, strict=False)
    except ValueError as e:
        raise ConfigError(f"invalid lab network {lab_network!r}: {e}") from None
    return 23000 + 10 * int(net.network_address.packed[2])


@dataclass(frozen=True)
class Ports:
    base: int

    def __post_init__(self) -> None:
        if not 1024 <= self.base <= 65535 - 4:
            raise ConfigError(f"cinder port base {self.base} out of range (1024-65531)")

    @property
    def api(self) -> int:
        return self.base

    @property
    def amqp(self) -> int:
        return self.base + 1

    @property
    def erlang_dist(self) -> int:
        return self.base + 2

    @property
    def epmd(self) -> int:
        return self.base + 3

    @property
    def keystone(self) -> int:
        return self.base + 4

    def all(self) -> dict[str, int]:
        return {
            "cinder-api": self.api,
            "amqp": self.amqp,
            "erlang-dist": self.erlang_dist,
            "epmd": self.epmd,
            "keystone": self.keystone,
        }


def backend_name(node: str) -> str:
    """The ``enabled_backends`` section (and ``volume_backend_name``) serving ``node``."""
    return f"zfs-{validate_node(node)}"


@dataclass(frozen=True)
class CinderLayout:
    """Paths and ports of the small Cinder of one zfs_backend home."""

    settings: Settings
    venv: Path  # the virtualenv holding cinder (``.venv-cinder``)
    #: the virtualenv holding keystone and gunicorn (``.venv-keystone``; default: beside ``venv``)
    keystone_venv: Path | None = None

    @property
    def root(self) -> Path:
        return self.settings.home / "cinder"

    @property
    def conf(self) -> Path:
        return self.root / "cinder.conf"

    @property
    def mysql_dir(self) -> Path:
        """MariaDB's data directory (Cinder's database)."""
        return self.root / "mysql"

    @property
    def mysql_socket(self) -> Path:
        """MariaDB listens on this unix socket only (``--skip-networking``)."""
        return self.run_dir / "mariadb.sock"

    @property
    def db_secret(self) -> Path:
        return self.root / "db.password"

    @property
    def db_synced(self) -> Path:
        """Written once ``cinder-manage db sync`` has made the schema."""
        return self.mysql_dir / "zfs-backend.synced"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def lock_dir(self) -> Path:
        return self.root / "lock"

    @property
    def rabbit_dir(self) -> Path:
        return self.root / "rabbitmq"

    @property
    def rabbit_secret(self) -> Path:
        return self.rabbit_dir / "password"

    @property
    def ports(self) -> Ports:
        base = self.settings.cinder_port_base or default_port_base(self.settings.lab_network)
        return Ports(base)

    @property
    def endpoint(self) -> str:
        """cinder-api's v3 endpoint (without a project id)."""
        return f"http://{LOOPBACK}:{self.ports.api}/v3"

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def keystone_bin(self, name: str) -> Path:
        venv = self.keystone_venv or self.venv.parent / ".venv-keystone"
        return venv / "bin" / name

    @property
    def keystone_dir(self) -> Path:
        """keystone.conf, its fernet and credential keys (0700)."""
        return self.root / "keystone"

    @property
    def auth_url(self) -> str:
        """Keystone's v3 identity endpoint."""
        return f"http://{LOOPBACK}:{self.ports.keystone}/v3"

    @property
    def credentials(self) -> Path:
        """The accounts ``cinder-up`` made in keystone (0600 JSON: ``admin``, ``member``, ``cinder``),
        present only while cinder-api runs behind keystone."""
        return self.root / "credentials.json"

    @property
    def api_paste(self) -> Path:
        """The paste pipeline cinder ships (``auth_strategy`` picks its noauth pipeline)."""
        return self.venv / "etc" / "cinder" / "api-paste.ini"


def rabbitmq_conf(lay: CinderLayout, password: str) -> str:
    """RabbitMQ's ``rabbitmq.conf``: AMQP on loopback only, one user of our own (no ``guest``)."""
    return (
        f"listeners.tcp.1 = {LOOPBACK}:{lay.ports.amqp}\n"
        f"default_user = {RABBIT_USER}\n"
        f"default_pass = {password}\n"
        "default_vhost = /\n"
        "loopback_users = none\n"
        "log.file.level = warning\n"
        "log.console = false\n"
        # a small machine: do not refuse publishers for the default 50 MB free-disk watermark
        "disk_free_limit.absolute = 1MB\n"
    )


def cinder_conf(
    lay: CinderLayout,
    nodes: list[str],
    password: str,
    *,
    db_password: str = "",
    stats_interval: int = 10,
    replication: dict[str, str] | None = None,
    service_password: str | None = None,
) -> str:
    """``cinder.conf``: the API on loopback, behind keystone (keystonemiddleware's ``authtoken``, as the
    ``cinder`` service user with ``service_password``) or, without a ``service_password``, noauth;
    MariaDB on a unix socket (``db_password``: its ``cinder`` user's), RabbitMQ, one backend section per
    node.

    ``stats_interval``: how often each cinder-volume backend re-reads its node's stats (and publishes
    its volumes' backend activities, see ``zfs_backend.cinder``); also the services' heartbeat.
    ``replication``: node -> standby node, written as Cinder's ``replication_device = backend_id:STANDBY``
    in the node's section (replication v2.1: ``cinder failover-host``)."""
    if not nodes:
        raise ConfigError("no storage nodes in the inventory: bring a lab up first (zfs-backend lab up)")
    replication = dict(replication or {})
    for node, standby in replication.items():
        if node not in nodes or standby not in nodes or node == standby:
            raise ConfigError(f"replication {node}:{standby}: both must be other nodes of the inventory")
    backends = [backend_name(n) for n in nodes]
    home = lay.settings.home
    lines = [
        "[DEFAULT]",
        f"host = {HOST}",
        f"state_path = {lay.root}",
        f"auth_strategy = {'noauth' if service_password is None else 'keystone'}",
        f"api_paste_config = {lay.api_paste}",
        # the filters each list call accepts (cinder reads /etc/cinder's otherwise, absent here: every
        # list logged an ERROR and filtered on nothing but the defaults)
        f"resource_query_filters_file = {lay.api_paste.with_name('resource_filters.json')}",
        f"osapi_volume_listen = {LOOPBACK}",
        f"osapi_volume_listen_port = {lay.ports.api}",
        "osapi_volume_workers = 1",
        f"transport_url = rabbit://{RABBIT_USER}:{password}@{LOOPBACK}:{lay.ports.amqp}/",
        f"enabled_backends = {','.join(backends)}",
        f"log_dir = {lay.log_dir}",
        "debug = false",
        f"report_interval = {max(1, stats_interval // 2)}",
        "service_down_time = 60",
        "graceful_shutdown_timeout = 10",
        f"periodic_interval = {stats_interval}",
        f"backend_stats_polling_interval = {stats_interval}",
        "scheduler_driver_init_wait_time = 5",
        "",
        "[database]",
        # MariaDB, as Cinder is deployed: with SQLite, oslo.db's deferred transactions that read and then
        # write failed at once with "database is locked" while the services wrote (a 500 now and then)
        f"connection = mysql+pymysql://cinder:{db_password}@localhost/cinder"
        f"?unix_socket={lay.mysql_socket}&charset=utf8mb4",
        "",
        "[oslo_concurrency]",
        f"lock_path = {lay.lock_dir}",
        "",
        "[coordination]",
        f"backend_url = file://{lay.lock_dir}",
        "",
        "[oslo_messaging_rabbit]",
        "heartbeat_timeout_threshold = 0",
        "",
    ]
    if service_password is not None:
        lines += [
            "[keystone_authtoken]",
            f"www_authenticate_uri = {lay.auth_url}",
            f"auth_url = {lay.auth_url}",
            "auth_type = password",
            "user_domain_name = Default",
            "project_domain_name = Default",
            "project_name = service",
            "username = cinder",
            f"password = {service_password}",
            "service_token_roles_required = true",
            "",
        ]
    for node, backend in zip(nodes, backends, strict=True):
        lines += [
            f"[{backend}]",
            "volume_driver = zfs_backend.cinder.ZfsNfsDriver",
            f"volume_backend_name = {backend}",
            f"zfs_backend_node = {node}",
            f"zfs_backend_parent = {CINDER_PARENT}",
            f"zfs_backend_home = {home}",
            f"zfs_backend_inventory = {lay.settings.inventory}",
        ]
        if node in replication:
            lines.append(f"replication_device = backend_id:{replication[node]}")
        lines.append("")
    return "\n".join(lines)
