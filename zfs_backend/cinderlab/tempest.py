"""Tempest's volume API tests against the lab's Cinder (``scripts/tempest``): Cinder's own acceptance test.

What third-party CI runs for a vendor's driver: ``tempest run`` on ``tempest.api.volume`` and
cinder-tempest-plugin's API tests, here against the Cinder of ``scripts/cinder-up`` (behind keystone),
with tempest and the plugin in their own virtualenv (``.venv-tempest``, ``requirements/tempest.txt``).

``tempest.conf`` is written from the running lab, never by hand: keystone's URL and the admin account
(``credentials.json``; tempest makes its own users and projects per test class: dynamic credentials), the
backends and what their pools publish (``vendor_name``, ``storage_protocol``), the API's newest
microversion, and ``[volume-feature-enabled]`` from what the adapter really implements (its class's own
methods, read from its source: a feature is claimed only where the adapter defines the driver call) and
what runs (``backup`` only with a cinder-backup service up). No compute, image, network or object
store: ``[service_available]`` says so, and tempest skips what needs them.

Results: ``tempest/results.json`` (one entry per test: id, status, skip reason) under the Cinder's root,
and the last line ``passed N, failed N, skipped N`` (as pytest's under ``scripts/test``: summed there).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..errors import LabError, MissingDependency, ZfsBackendError
from ..private import private_dir, private_open
from .api import api_get
from .config import CinderLayout
from .keystone import REGION, Account, load_accounts

__all__ = [
    "REGEX",
    "SUBSETS",
    "adapter_methods",
    "features",
    "skip_table",
    "summary",
    "tempest_conf",
]

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "zfs_backend" / "cinder" / "driver.py"
#: the volume API tests of tempest and of the plugin (scenario tests need nova and glance)
REGEX = r"^(tempest\.api\.volume\.|cinder_tempest_plugin\.api\.volume\.)"
#: named subsets (``--subset``). ``ci``: the classes that drive the adapter's own calls (create, get,
#: delete, clone, from a snapshot, extend, snapshot delete with volumes made from it, cascade delete,
#: retype with migration between backends), ~6 min with the lab and its Cinder (docs/cinder-tempest.md)
SUBSETS = {
    "ci": r"^(tempest\.api\.volume\.(test_volumes_get\.VolumesGetTest|test_volumes_clone\.VolumesCloneTest"
    r"|test_volumes_extend\.VolumesExtendTest|test_volume_delete_cascade\.VolumesDeleteCascade"
    r"|admin\.test_volume_retype\.VolumeRetypeWithMigrationTest)"
    r"|cinder_tempest_plugin\.api\.volume\.(test_volume_dependency\.VolumeDependencyTests"
    r"|test_multiple_volume_from_resource\.CreateVolumesFrom(Snapshot|SourceVolume)Test))\.",
}
RESULTS_SCRIPT = Path(__file__).with_name("tempest_results.py")
#: tests that need glance, left out of the run. The lab has no image service, but three of tempest's
#: volume test classes (VolumesGetTest, VolumesNegativeTest, VolumesActionsTest) build a reader's image
#: client in ``setup_clients`` unconditionally, which tempest's client manager only has with
#: ``[service_available] glance = True``: without it the whole class errors. So tempest.conf says glance
#: is there and what would use it is excluded here: tests tagged ``image`` (``@utils.services('image')``)
#: the classes that check ``service_available.glance`` themselves, and ``test_volume_extend``, which
#: makes its volume from ``[compute] image_ref`` untagged.
NEEDS_GLANCE = (
    r"(\[[^]]*\bimage\b[^]]*\]"
    r"|tempest\.api\.volume\.test_image_metadata\."
    r"|cinder_tempest_plugin\.api\.volume\.test_create_from_image\."
    r"|CreateVolumesFromImageTest"
    r"|VolumesExtendTest\.test_volume_extend\[)"
)


def adapter_methods(source: Path = ADAPTER, cls: str = "ZfsNfsDriver") -> set[str]:
    """The methods the adapter class itself defines (Cinder's base class answers the others with
    ``NotImplementedError`` or a generic fallback)."""
    tree = ast.parse(source.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return set()


def features(methods: set[str], backends: list[str], services: set[str]) -> dict[str, bool]:
    """``[volume-feature-enabled]``: claimed only where implemented (``methods``) or running
    (``services``: the binaries of the services up)."""
    return {
        "api_v3": True,
        "multi_backend": len(backends) > 1,
        "snapshot": "create_snapshot" in methods,
        "clone": "create_cloned_volume" in methods,
        "extend_volume_with_snapshot": "extend_volume" in methods,
        "backup": "cinder-backup" in services,
        "manage_volume": "manage_existing" in methods,
        "manage_snapshot": "manage_existing_snapshot" in methods,
        "volume_revert": "revert_to_snapshot" in methods,
        "replication": "failover_host" in methods and False,  # no replication_device in tempest's lab
        "extend_attached_volume": False,  # needs nova
        "extend_attached_encrypted_volume": False,
        "consistency_group": False,
        # the dependency tests: the image ones are excluded (NEEDS_GLANCE), what is left is
        # test_volume_from_snapshot_cascade_delete (a volume, its snapshot, a volume from it: cascade delete)
        "volume_image_dep_tests": "create_volume_from_snapshot" in methods,
        "enable_volume_image_dep_tests": "create_volume_from_snapshot" in methods,
        "cluster_active_active": False,
        "concurrency_tests": False,
    }


def tempest_conf(
    lay: CinderLayout,
    admin: Account,
    pools: list[dict[str, Any]],
    feats: dict[str, bool],
    max_microversion: str,
) -> str:
    """``tempest.conf`` for this lab (pure: everything it says is passed in)."""
    backends = sorted({p["capabilities"].get("volume_backend_name", "") for p in pools} - {""})
    caps = pools[0]["capabilities"] if pools else {}
    on = {k: str(v) for k, v in feats.items()}
    work = lay.root / "tempest"
    lines = [
        "[DEFAULT]",
        f"log_dir = {work}",
        "log_file = tempest.log",
        "",
        "[auth]",
        "use_dynamic_credentials = True",
        f"admin_username = {admin.username}",
        f"admin_password = {admin.password}",
        f"admin_project_name = {admin.project_name}",
        "admin_domain_name = Default",
        "create_isolated_networks = False",
        "",
        "[identity]",
        f"uri_v3 = {lay.auth_url}",
        "auth_version = v3",
        f"region = {REGION}",
        "",
        "[identity-feature-enabled]",
        "api_v3 = True",
        "",
        "[service_available]",
        "cinder = True",
        "nova = False",
        "glance = True",  # not so: see NEEDS_GLANCE
        # no: with neutron "available" the classes that want a network for their server tests
        # (snapshots, volume actions) ran, but tempest's credential cleanup then failed every class's
        # tearDownClass listing neutron's security groups; those classes are skipped (needs neutron)
        "neutron = False",
        "swift = False",
        "",
        "[volume]",
        "catalog_type = volumev3",
        f"region = {REGION}",
        "endpoint_type = publicURL",
        f"backend_names = {','.join(backends)}",
        f"storage_protocol = {caps.get('storage_protocol', 'nfs')}",
        f"vendor_name = {caps.get('vendor_name', 'Open Source')}",
        "volume_size = 1",
        "build_timeout = 300",
        "min_microversion = 3.0",
        f"max_microversion = {max_microversion}",
        "",
        "[volume-feature-enabled]",
        *(f"{k} = {v}" for k, v in on.items()),
        "",
        "[validation]",
        "run_validation = False",
        "",
        # cinder 29's oslo.policy always enforces scope and the new defaults (reader, member, admin)
        "[enforce_scope]",
        "cinder = True",
        "keystone = True",
        "",
    ]
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(passed, failed, skipped) of ``tempest_results.py``'s entries (an unexpected success fails)."""
    c = Counter(r["status"] for r in results)
    return c["success"] + c["xfail"], c["fail"] + c["uxsuccess"], c["skip"]


def skip_table(results: list[dict[str, Any]]) -> str:
    """The skips as a markdown table: reason, how many, which (classes skipped whole show as
    ``Class (setUpClass)``)."""
    by: dict[str, list[str]] = {}
    for r in results:
        if r["status"] == "skip":
            tid = str(r["id"]).split("[", 1)[0]
            if tid.startswith("setUpClass ("):
                tid = tid[len("setUpClass (") : -1].rsplit(".", 1)[-1] + " (whole class)"
            else:
                tid = ".".join(tid.rsplit(".", 2)[-2:])
            by.setdefault(r["reason"] or "(no reason given)", []).append(tid)
    rows = ["| skipped | reason (tempest's words) | tests |", "|---|---|---|"]
    for reason, tests in sorted(by.items(), key=lambda kv: -len(kv[1])):
        rows.append(f"| {len(tests)} | {reason.replace('|', '/')} | {', '.join(sorted(tests))} |")
    return "\n".join(rows) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = private_open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _max_microversion(lay: CinderLayout) -> str:
    versions = api_get(lay, "")["versions"]
    return str(next(v["version"] for v in versions if v["id"].startswith("v3")))


def write_conf(lay: CinderLayout) -> Path:
    """``tempest/tempest.conf`` under the Cinder's root, from the running lab."""
    accounts = load_accounts(lay)
    if accounts is None:
        raise LabError("cinder-api runs without keystone: scripts/cinder-up (its default: --auth keystone)")
    pools = api_get(lay, "scheduler-stats/get_pools?detail=True")["pools"]
    services = {s["binary"] for s in api_get(lay, "os-services")["services"] if s.get("state") == "up"}
    backends = sorted({p["name"].split("@", 1)[1].split("#", 1)[0] for p in pools if "@" in p["name"]})
    feats = features(adapter_methods(), backends, services)
    work = lay.root / "tempest"
    private_dir(work)
    conf = work / "tempest.conf"
    _write_private(conf, tempest_conf(lay, accounts["admin"], pools, feats, _max_microversion(lay)))
    return conf


def results(venv: Path, work: Path) -> list[dict[str, Any]]:
    """Every test of the last run, from stestr's subunit stream read by ``tempest_results.py`` (run in
    the tempest virtualenv, which has subunit)."""
    stream = subprocess.run(
        [str(venv / "bin" / "stestr"), "last", "--subunit"], cwd=work, capture_output=True, check=False
    )
    parsed = subprocess.run(
        [str(venv / "bin" / "python"), str(RESULTS_SCRIPT)],
        input=stream.stdout,
        capture_output=True,
        check=False,
    )
    if parsed.returncode != 0:
        raise LabError(f"reading tempest's results failed: {parsed.stderr.decode(errors='replace')[-2000:]}")
    out: list[dict[str, Any]] = json.loads(parsed.stdout or b"[]")
    return out


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/tempest", description=__doc__)
    ap.add_argument("--regex", default=REGEX, help=f"tests to run (default {REGEX})")
    ap.add_argument("--subset", choices=sorted(SUBSETS), help="a named subset instead of --regex (ci)")
    ap.add_argument("--concurrency", type=int, default=2, help="tempest workers (default 2)")
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-tempest", help="tempest's virtualenv")
    ap.add_argument("--conf-only", action="store_true", help="write tempest.conf and print its path")
    args = ap.parse_args(argv)
    lay = CinderLayout(load_settings(), ROOT / ".venv-cinder")
    try:
        if not (args.venv / "bin" / "tempest").exists():
            raise MissingDependency(
                f"{args.venv}/bin/tempest is missing: ZFS_BACKEND_TEMPEST=1 scripts/bootstrap"
            )
        if not 1 <= args.concurrency <= 16:
            raise LabError(f"--concurrency {args.concurrency}: 1 to 16")
        conf = write_conf(lay)
        if args.conf_only:
            print(conf)
            return 0
        work = conf.parent
        cmd = [str(args.venv / "bin" / "tempest"), "run", "--config-file", str(conf)]
        regex = SUBSETS[args.subset] if args.subset else args.regex
        cmd += ["--regex", regex, "--exclude-regex", NEEDS_GLANCE]
        cmd += ["--concurrency", str(args.concurrency)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["PYTHONWARNINGS"] = "ignore"
        subprocess.run(cmd, cwd=work, env=env, check=False)
        found = results(args.venv, work)
        _write_private(work / "results.json", json.dumps(found, indent=1))
        _write_private(work / "skips.md", skip_table(found))
    except ZfsBackendError as e:
        print(f"tempest: {e}", file=sys.stderr)
        return e.exit_code
    reasons = Counter(r["reason"] for r in found if r["status"] == "skip")
    for reason, n in reasons.most_common():
        print(f"skipped {n:3d}: {reason}")
    for r in found:
        if r["status"] in ("fail", "uxsuccess"):
            print(f"FAILED: {r['id']}")
    passed, failed, skipped = summary(found)
    print(f"results: {work / 'results.json'}")
    print(f"passed {passed}, failed {failed}, skipped {skipped}")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(run())
