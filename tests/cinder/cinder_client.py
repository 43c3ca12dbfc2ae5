"""python-cinderclient driven over stdin/stdout: run by ``tests/cinder/conftest.py`` in
``.venv-cinder/bin/python`` (never imported by pytest: the project's venv has no cinderclient).

    cinder_client.py ENDPOINT PROJECT_ID

One JSON request a line on stdin, ``{"call": "volumes.create", "args": [...], "kwargs": {...}}`` (a
method of ``cinderclient.client.Client("3.70")`` authenticated by keystone as the ``OS_*`` variables
say (``OS_AUTH_URL`` set: cinder-api runs behind keystone; the endpoint then comes from its catalogue),
else with cinderclient's own noauth plugin, as ``cinder --os-auth-type noauth`` is; ``"then": [METHOD,
ARG]`` calls a method of the resource it returned), one JSON answer a line on stdout: ``{"result":
...}`` (a resource as its ``to_dict()``, a list of them, or plain data) or ``{"error": {"type":
"BadRequest", "code": 400, "message": "..."}}`` (cinderclient's exception, i.e. what cinder-api
answered).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from cinderclient import client, exceptions
from cinderclient.contrib import noauth
from keystoneauth1 import session
from keystoneauth1.identity import v3

API_VERSION = "3.70"


def plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def main() -> int:
    endpoint, project = sys.argv[1], sys.argv[2]
    env = os.environ
    auth: Any
    if env.get("OS_AUTH_URL"):
        auth = v3.Password(
            auth_url=env["OS_AUTH_URL"],
            username=env["OS_USERNAME"],
            password=env["OS_PASSWORD"],
            project_name=env["OS_PROJECT_NAME"],
            user_domain_id=env["OS_USER_DOMAIN_ID"],
            project_domain_id=env["OS_PROJECT_DOMAIN_ID"],
        )
    else:
        auth = noauth.CinderNoAuthPlugin("admin", project, endpoint=endpoint)
    c = client.Client(API_VERSION, session=session.Session(auth=auth))
    for line in sys.stdin:
        req = json.loads(line)
        try:
            fn: Any = c
            for part in req["call"].split("."):
                fn = getattr(fn, part)
            result = fn(*req.get("args", []), **req.get("kwargs", {}))
            if req.get("then"):  # a method of the resource returned, e.g. volume_types.get(...).set_keys
                method, arg = req["then"]
                result = getattr(result, method)(arg)
            out = {"result": plain(result)}
        except exceptions.ClientException as e:
            out = {"error": {"type": type(e).__name__, "code": e.code, "message": str(e.message)}}
        except Exception as e:
            out = {"error": {"type": type(e).__name__, "code": None, "message": traceback.format_exc()}}
            _ = e
        sys.stdout.write(json.dumps(out, default=str) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
