"""Asking the small Cinder's API as its admin (keystone's token, or noauth's when cinder-api runs
without keystone): ``api_get``, and the readiness checks ``up`` waits on (:mod:`.services`) and
``status`` reports. Tokens are kept per auth URL while valid; a 401 drops it, so the next call logs in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import LabError
from . import keystone
from .config import HOST, LOOPBACK, PROJECT_ID, CinderLayout

__all__ = ["api_get", "api_ok", "forget_token", "pools_known", "services_up"]


_TOKENS: dict[str, tuple[str, str]] = {}  # auth URL -> the admin's (token, project id), while valid


def _admin_auth(lay: CinderLayout) -> tuple[str, str]:
    """(token, project id) of the admin: keystone's when cinder-api runs behind it, else noauth's."""
    accounts = keystone.load_accounts(lay)
    if accounts is None:
        return f"admin:{PROJECT_ID}", PROJECT_ID
    if lay.auth_url not in _TOKENS:
        _TOKENS[lay.auth_url] = keystone.token(lay.auth_url, accounts["admin"])
    return _TOKENS[lay.auth_url]


def forget_token(lay: CinderLayout) -> None:
    """Drop the admin's token for ``lay``'s keystone (a keystone just started issues new ones)."""
    _TOKENS.pop(lay.auth_url, None)


def api_get(lay: CinderLayout, path: str, timeout: float = 10.0) -> Any:
    """GET ``path`` (under ``/v3/<project>``, or the root for ``""``) as the admin; parsed JSON."""
    tok, project = _admin_auth(lay)
    url = f"http://{LOOPBACK}:{lay.ports.api}/" if path == "" else f"{lay.endpoint}/{project}/{path}"
    headers = {"X-Auth-Token": tok, "Accept": "application/json"}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (http on loopback, our own API)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback http, our own API)
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code == 300:  # the versions document
            return json.loads(e.read() or b"null")
        if e.code == 401:  # the token expired: the next call logs in again
            _TOKENS.pop(lay.auth_url, None)
        raise


def api_ok(lay: CinderLayout) -> bool:
    """cinder-api answers (its versions document)."""
    try:
        return bool(api_get(lay, "", timeout=5))
    except (OSError, ValueError, LabError):
        return False


def services_up(lay: CinderLayout, backends: list[str]) -> bool:
    """The scheduler and one cinder-volume per backend are up and enabled."""
    try:
        services = api_get(lay, "os-services")["services"]
    except (OSError, ValueError, KeyError):
        return False
    up = {
        (s["binary"], s["host"]) for s in services if s.get("state") == "up" and s.get("status") == "enabled"
    }
    host = HOST
    want = {("cinder-scheduler", host)} | {("cinder-volume", f"{host}@{b}") for b in backends}
    return want <= up


def pools_known(lay: CinderLayout, backends: list[str]) -> bool:
    """The scheduler holds every backend's published capacity (so a create can be placed)."""
    try:
        pools = api_get(lay, "scheduler-stats/get_pools?detail=True")["pools"]
    except (OSError, ValueError, KeyError):
        return False
    seen = {p["name"].split("@", 1)[1].split("#", 1)[0] for p in pools if "@" in p["name"]}
    return set(backends) <= seen and all(
        float(p.get("capabilities", {}).get("total_capacity_gb") or 0) > 0 for p in pools
    )
