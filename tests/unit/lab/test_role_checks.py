"""The role's access checks (tasks/check_access.yml), run by ansible-playbook on this machine (connection
local, nothing but asserts): an empty forced command for node keys, or a controller key without the
controller's addresses, fails the play with a clear message before anything changes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[3] / "ansible" / "roles" / "zfs_backend_node"
PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
FATAL = re.compile(r"^fatal: \[([a-z_]+)\]: FAILED! => (\{.*\})$", re.MULTILINE)
RECAP = re.compile(r"^([a-z_]+)\s+: (ok=.*)$", re.MULTILINE)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 zfs-backend-controller"

#: host -> (its variables, a fragment of its failure or None when it passes)
CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "ok": (
        {"zfs_backend_node_controller_keys": [KEY], "zfs_backend_node_controller_addresses": ["198.18.10.1"]},
        None,
    ),
    "ok_no_controller_keys": ({}, None),
    "empty_command": ({"zfs_backend_node_key_command": ""}, "zfs_backend_node_key_command is empty"),
    "blank_command": ({"zfs_backend_node_key_command": "  "}, "zfs_backend_node_key_command is empty"),
    "two_line_command": (
        {"zfs_backend_node_key_command": "/bin/true\nssh-ed25519 AAAA x"},
        "zfs_backend_node_key_command is empty (or not one line)",
    ),
    "keys_without_addresses": (
        {"zfs_backend_node_controller_keys": [KEY]},
        "zfs_backend_node_controller_addresses is empty",
    ),
    "key_with_options": (
        {
            "zfs_backend_node_controller_keys": [f'command="/bin/sh" {KEY}'],
            "zfs_backend_node_controller_addresses": ["198.18.10.1"],
        },
        "1 controller key(s) not a bare public key",
    ),
    "key_with_a_second_line": (
        {
            "zfs_backend_node_controller_keys": [f"{KEY}\nssh-rsa AAAAB3 evil"],
            "zfs_backend_node_controller_addresses": ["198.18.10.1"],
        },
        "1 controller key(s) not a bare public key",
    ),
    "address_with_a_quote": (
        {
            "zfs_backend_node_controller_keys": [KEY],
            "zfs_backend_node_controller_addresses": ['1.2.3.4" command="/bin/sh'],
        },
        "controller address(es) refused",
    ),
    "address_matching_everything": (
        {"zfs_backend_node_controller_keys": [KEY], "zfs_backend_node_controller_addresses": ["0.0.0.0/0"]},
        "controller address(es) refused: 0.0.0.0/0",
    ),
    "wildcard_address": (
        {"zfs_backend_node_controller_keys": [KEY], "zfs_backend_node_controller_addresses": ["*"]},
        "controller address(es) refused: *",
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if PLAYBOOK is None:
        pytest.fail("ansible-playbook is not in the project's virtualenv (scripts/bootstrap installs it)")
    d = tmp_path_factory.mktemp("role-checks")
    inventory = {
        "all": {
            "hosts": {
                name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **v}
                for name, (v, _) in CASES.items()
            }
        }
    }
    (d / "inventory.yml").write_text(yaml.safe_dump(inventory))
    # a role made of the real one's defaults (below the inventory's variables, as in site.yml), vars and
    # check_access.yml alone
    role = d / "roles" / "checks"
    for sub in ("defaults", "vars"):
        (role / sub).mkdir(parents=True)
        (role / sub / "main.yml").symlink_to(ROLE / sub / "main.yml")
    (role / "tasks").mkdir()
    (role / "tasks" / "main.yml").symlink_to(ROLE / "tasks" / "check_access.yml")
    play = [{"hosts": "all", "gather_facts": False, "roles": ["checks"]}]
    (d / "play.yml").write_text(yaml.safe_dump(play))
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(d / "home"),
        "ANSIBLE_LOCAL_TEMP": str(d / "tmp"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_PRETTY_RESULTS": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CONFIG": str(d / "none.cfg"),
        "ANSIBLE_FORKS": "2",
    }
    p = subprocess.run(
        [PLAYBOOK, "-i", str(d / "inventory.yml"), str(d / "play.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=d,
    )
    failures: dict[str, dict[str, Any]] = {name: {"failed": False, "msg": ""} for name in CASES}
    for m in FATAL.finditer(p.stdout):
        failures[m.group(1)] = {"failed": True, "msg": str(json.loads(m.group(2)).get("msg", ""))}
    recap = dict(RECAP.findall(p.stdout))
    assert set(recap) == set(CASES), p.stdout[-3000:] + p.stderr[-3000:]
    return failures


@pytest.mark.parametrize("case", list(CASES))
def test_role_access_checks(case: str, results: dict[str, dict[str, Any]]) -> None:
    _vars, fragment = CASES[case]
    got = results[case]
    if fragment is None:
        assert not got["failed"], got
    else:
        assert got["failed"] and fragment in got["msg"] and "nothing was changed" in got["msg"], got
