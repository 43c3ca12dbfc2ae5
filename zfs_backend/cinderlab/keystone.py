"""Keystone in the lab's Cinder: the identity service cinder-api authenticates every request with.

Keystone from PyPI in its own virtualenv (``.venv-keystone``, pinned by ``scripts/bootstrap --cinder``),
served by gunicorn (a real WSGI server) on loopback (``Ports.keystone``), its database ``keystone`` on the
Cinder's private MariaDB (unix socket only). :func:`init` makes the schema, the fernet and credential keys
(``keystone/``, 0700) and runs ``keystone-manage bootstrap`` (the ``admin`` user, project and role, the
``member`` and ``reader`` roles, the identity endpoints); :func:`ensure_accounts` then adds, over the
REST API and idempotently: the ``service`` project with the ``cinder`` user (admin there: what
keystonemiddleware validates tokens as), a ``demo`` project with a ``demo`` user holding ``member``, and
the service catalogue's ``volumev3`` service with its public, internal and admin endpoints.

Passwords are random, made once per home and kept in ``credentials.json`` (0600, see
``CinderLayout.credentials``); the bootstrap password reaches keystone-manage through its environment,
never its argv.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LabError, MissingDependency
from ..private import private_open
from . import mariadb, procs
from .config import LOOPBACK, CinderLayout

__all__ = [
    "REGION",
    "Account",
    "argv",
    "check_prerequisites",
    "ensure_accounts",
    "env",
    "gunicorn_conf",
    "init",
    "keystone_conf",
    "load_accounts",
    "ready",
    "save_accounts",
    "start",
    "token",
]

REGION = "RegionOne"
#: bcrypt's fewest rounds: tempest makes a user per test class, and each login hashes (a lab, not a cloud)
HASH_ROUNDS = 4


@dataclass(frozen=True)
class Account:
    """A keystone user and the project its tokens are scoped to (domain ``Default``)."""

    username: str
    password: str
    project_name: str
    project_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "project_id": self.project_id,
        }


def check_prerequisites(lay: CinderLayout) -> None:
    for b in ("keystone-manage", "gunicorn"):
        if not lay.keystone_bin(b).exists():
            raise MissingDependency(f"{lay.keystone_bin(b)} is missing: run scripts/bootstrap --cinder")


def keystone_conf(lay: CinderLayout, db_password: str) -> str:
    """``keystone.conf``: MariaDB on its socket, fernet tokens, keys and logs under the Cinder's root."""
    d = lay.keystone_dir
    return "\n".join(
        [
            "[DEFAULT]",
            f"log_dir = {lay.log_dir}",
            "log_file = keystone.log",
            "debug = false",
            "",
            "[database]",
            f"connection = mysql+pymysql://keystone:{db_password}@localhost/keystone"
            f"?unix_socket={lay.mysql_socket}&charset=utf8mb4",
            "",
            "[token]",
            "provider = fernet",
            "",
            "[fernet_tokens]",
            f"key_repository = {d / 'fernet-keys'}",
            "",
            "[fernet_receipts]",
            f"key_repository = {d / 'fernet-keys'}",
            "",
            "[credential]",
            f"key_repository = {d / 'credential-keys'}",
            "",
            "[identity]",
            f"password_hash_rounds = {HASH_ROUNDS}",
            "",
        ]
    )


def env(lay: CinderLayout, base: dict[str, str]) -> dict[str, str]:
    """The services' environment plus keystone's configuration file (keystone's WSGI application reads
    ``OS_KEYSTONE_CONFIG_FILES``, never ``/etc/keystone``)."""
    out = {**base, "OS_KEYSTONE_CONFIG_FILES": str(lay.keystone_dir / "keystone.conf")}
    out["GUNICORN_CMD_ARGS"] = f"--config {lay.keystone_dir / 'gunicorn.conf.py'}"
    out["PATH"] = f"{lay.keystone_bin('python').parent}:{base.get('PATH', '/usr/bin:/bin')}"
    return out


def gunicorn_conf(lay: CinderLayout) -> str:
    """gunicorn's configuration file: keystone's WSGI application on loopback. Everything is said here,
    none of it in gunicorn's argv: keystone parses ``sys.argv`` as its own command line (oslo.config) and
    refuses gunicorn's options."""
    return "\n".join(
        [
            'wsgi_app = "keystone.wsgi.api:application"',
            f'bind = ["{LOOPBACK}:{lay.ports.keystone}"]',
            "workers = 2",
            "timeout = 120",
            f'accesslog = "{lay.log_dir / "keystone-access.log"}"',
            "",
        ]
    )


def argv(lay: CinderLayout) -> list[str]:
    """gunicorn alone (its configuration: ``GUNICORN_CMD_ARGS`` of :func:`env`)."""
    return [str(lay.keystone_bin("gunicorn"))]


def _manage(lay: CinderLayout, base_env: dict[str, str], *args: str, secret: str = "") -> None:
    e = env(lay, base_env)
    if secret:
        e["OS_BOOTSTRAP_PASSWORD"] = secret
    conf = str(lay.keystone_dir / "keystone.conf")
    argv = [str(lay.keystone_bin("keystone-manage")), "--config-file", conf, *args]
    procs.run_tool(f"keystone-manage {args[0]}", argv, env=e, timeout=600)


def init(lay: CinderLayout, base_env: dict[str, str], admin_password: str) -> None:
    """Schema, keys and ``keystone-manage bootstrap`` (each idempotent: keystone-manage's own)."""
    _manage(lay, base_env, "db_sync")
    for what in ("fernet_setup", "credential_setup"):
        _manage(lay, base_env, what, "--keystone-user", "root", "--keystone-group", "root")
    _manage(
        lay,
        base_env,
        "bootstrap",
        "--bootstrap-username",
        "admin",
        "--bootstrap-project-name",
        "admin",
        "--bootstrap-role-name",
        "admin",
        "--bootstrap-region-id",
        REGION,
        "--bootstrap-admin-url",
        lay.auth_url,
        "--bootstrap-internal-url",
        lay.auth_url,
        "--bootstrap-public-url",
        lay.auth_url,
        secret=admin_password,
    )


def _request(
    url: str, *, method: str = "GET", token: str = "", body: Any = None, timeout: float = 30.0
) -> tuple[Any, dict[str, str]]:
    """One JSON call to keystone: (parsed body, headers)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback http, our keystone)
        raw = r.read()
        return (json.loads(raw) if raw else None), dict(r.headers.items())


def ready(lay: CinderLayout) -> bool:
    try:
        _request(lay.auth_url, timeout=5)
    except (OSError, ValueError):
        return False
    return True


def token(auth_url: str, account: Account) -> tuple[str, str]:
    """A project-scoped token of ``account``: (token, project id)."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": account.username,
                        "domain": {"id": "default"},
                        "password": account.password,
                    }
                },
            },
            "scope": {"project": {"name": account.project_name, "domain": {"id": "default"}}},
        }
    }
    try:
        answer, headers = _request(f"{auth_url}/auth/tokens", method="POST", body=body)
    except urllib.error.HTTPError as e:
        raise LabError(f"keystone refused {account.username}'s login: {e.code} {e.reason}") from None
    tok = next((v for k, v in headers.items() if k.lower() == "x-subject-token"), "")
    return tok, str(answer["token"]["project"]["id"])


class _Api:
    """The few keystone v3 calls :func:`ensure_accounts` needs, as the bootstrap admin."""

    def __init__(self, auth_url: str, admin_token: str) -> None:
        self.url, self.tok = auth_url, admin_token

    def find(self, kind: str, **query: str) -> dict[str, Any] | None:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        found = _request(f"{self.url}/{kind}?{qs}", token=self.tok)[0][kind]
        return found[0] if found else None

    def ensure(self, kind: str, one: str, attrs: dict[str, Any], **query: str) -> str:
        have = self.find(kind, **query)
        if have is None:
            have = _request(f"{self.url}/{kind}", method="POST", token=self.tok, body={one: attrs})[0][one]
        return str(have["id"])

    def grant(self, project: str, user: str, role: str) -> None:
        url = f"{self.url}/projects/{project}/users/{user}/roles/{role}"
        _request(url, method="PUT", token=self.tok)


def ensure_accounts(lay: CinderLayout, admin: Account, passwords: dict[str, str]) -> dict[str, Account]:
    """The ``service`` project and ``cinder`` user, the ``demo`` member project and user, the volumev3
    service and endpoints (created when missing; passwords reset to ``passwords``'). Returns the
    accounts by role: ``admin``, ``member``, ``cinder``."""
    tok, admin_project = token(lay.auth_url, admin)
    api = _Api(lay.auth_url, tok)
    roles = {r: api.ensure("roles", "role", {"name": r}, name=r) for r in ("admin", "member", "service")}
    out = {"admin": Account(admin.username, admin.password, admin.project_name, admin_project)}
    for key, user, project, role_names in (
        ("cinder", "cinder", "service", ("admin", "service")),
        ("member", "demo", "demo", ("member",)),
    ):
        pid = api.ensure("projects", "project", {"name": project, "domain_id": "default"}, name=project)
        attrs = {"name": user, "domain_id": "default", "password": passwords[key], "default_project_id": pid}
        uid = api.ensure("users", "user", attrs, name=user)
        _request(f"{lay.auth_url}/users/{uid}", method="PATCH", token=tok, body={"user": attrs})
        for r in role_names:
            api.grant(pid, uid, roles[r])
        out[key] = Account(user, passwords[key], project, pid)
    svc = api.ensure(
        "services", "service", {"name": "cinderv3", "type": "volumev3", "enabled": True}, type="volumev3"
    )
    url = f"http://{LOOPBACK}:{lay.ports.api}/v3/%(project_id)s"
    for iface in ("public", "internal", "admin"):
        endpoint = {"service_id": svc, "interface": iface, "url": url, "region_id": REGION, "enabled": True}
        api.ensure("endpoints", "endpoint", endpoint, service_id=svc, interface=iface)
    return out


def load_accounts(lay: CinderLayout) -> dict[str, Account] | None:
    """The accounts of ``credentials.json``, or None when cinder-api runs without keystone."""
    try:
        d = json.loads(lay.credentials.read_text())
    except FileNotFoundError:
        return None
    return {k: Account(**v) for k, v in d["accounts"].items()}


def save_accounts(lay: CinderLayout, accounts: dict[str, Account]) -> None:
    """``credentials.json`` (0600): keystone's URL, its region and the accounts, for the clients."""
    fd = private_open(lay.credentials, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {
                "auth_url": lay.auth_url,
                "region": REGION,
                "accounts": {k: a.to_dict() for k, a in accounts.items()},
            },
            f,
            indent=1,
        )


def start(
    lay: CinderLayout,
    run: Callable[[str, list[str], dict[str, str]], Any],
    watch: list[Any],
    timeout: float,
    *,
    secret: Callable[[Path], str],
    base_env: dict[str, str],
) -> None:
    """Keystone's database, schema and bootstrap, gunicorn serving it (started by ``run``, appended to
    ``watch``), then the accounts and catalogue, saved in ``credentials.json`` for the clients.
    ``secret(path)``: the password kept in ``path``, made there the first time."""
    kd = lay.keystone_dir
    mariadb.ensure_database(lay, "keystone", secret(kd / "db.password"))
    admin = Account("admin", secret(kd / "admin.password"), "admin")
    init(lay, base_env, admin.password)
    ks = run("keystone", argv(lay), env(lay, base_env))
    procs.wait_for("keystone", lambda: ready(lay), timeout=timeout, procs=[*watch, ks])
    watch.append(ks)
    passwords = {k: secret(kd / f"{k}.password") for k in ("cinder", "member")}
    save_accounts(lay, ensure_accounts(lay, admin, passwords))
