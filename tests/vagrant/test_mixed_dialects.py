"""zfs-fuse lab node <-> OpenZFS VM replication, both ways, through the product: the agents, the
controller's grants, ``peer-exec``, strict host keys and narrow node keys (mixed_world.py puts a lab
node on the VMs' network at layer 2 and makes it and the VMs peers as the role does).

What it establishes:

- lab node (zfs-fuse 0.7, pool version 23, filesystem version 4) -> OpenZFS VM: **works**, full then
  incremental; checksums and snapshot listings (names, GUIDs) equal; ``n == m``; the replica is a
  version 4 filesystem on OpenZFS;
- OpenZFS VM -> lab node: **refused**, with one line naming both zfs's filesystem versions, before any
  stream, the lab node left as it was; for OpenZFS's default filesystem (version 5, system attributes)
  and for one made at version 4 (``zfs create -o version=4``). zfs itself shows why, given the same
  stream through the host (the test checks it, so the refusal is not a guess): zfs-fuse's ``zfs
  receive`` rejects the version 5 stream ("stream has unsupported feature, feature flags = 4":
  SA_SPILL), and receives the version 4 one (exit 0, GUIDs and data blocks intact by ``zdb``) into a
  filesystem whose root it cannot read (``ls``: No such file or directory).

It needs the Vagrant tier (conftest.py) and a lab (``ZFS_BACKEND_TEST_NETWORK``/``_HOME`` as the lab
tests: tests/conftest.py's ``lab_settings``; one node here): under ``CI=true`` a missing one fails.
Nothing is left: the datasets it made on the VMs and the lab node, the VMs' files written back as they
were, the lab node's second link, the lab.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zfs_backend.config import Settings, load_settings
from zfs_backend.errors import UnsupportedFeature, ZfsBackendError
from zfs_backend.hosts import SSHHost, load_inventory
from zfs_backend.hosts.inventory import Inventory
from zfs_backend.lab import Lab
from zfs_backend.zfs import Zfs, parse_dataset

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from mixed_world import MixedWorld, build, stream_via_host
from replication_vm import MiB, T, assert_success, checksums, listing, replicate, snapshot, write
from vagrant_helpers import controller_ssh


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@pytest.fixture(scope="module")
def mixed_lab(lab_settings: Settings) -> Iterator[Lab]:
    """A one-node lab of this module's own (the lab tests' network and home), down at the end."""
    try:
        Lab.preflight()
    except ZfsBackendError as e:
        if _in_ci():
            pytest.fail(f"CI: no lab: {e}", pytrace=False)
        pytest.skip(f"no lab: {e}")
    lab = Lab(lab_settings)
    lab.down()  # one a killed run left behind
    lab = Lab(lab_settings)
    try:
        lab.up(nodes=1, pool_size=1 << 30, with_agent=True)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lab_host(mixed_lab: Lab, lab_settings: Settings) -> Iterator[SSHHost]:
    host = load_inventory(lab_settings.inventory).connect("node1", lab_settings, connect_timeout=60)
    yield host
    host.close()


@pytest.fixture(scope="module")
def world(
    mixed_lab: Lab,
    lab_settings: Settings,
    lab_host: SSHHost,
    vagrant_inventory: Inventory,
    vms: dict[str, SSHHost],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MixedWorld]:
    home = tmp_path_factory.mktemp("mixed")
    home.chmod(0o700)
    w: MixedWorld | None = None
    try:
        w = build(mixed_lab, load_inventory(lab_settings.inventory), lab_host, vagrant_inventory, vms, home)
        yield w
    finally:
        if w is not None:
            failed = w.undo()
            assert not failed, failed


@pytest.fixture(scope="module")
def mixed_settings(world: MixedWorld) -> Settings:
    """The controller's settings: the inventory of both worlds, a home of this module's own."""
    home = world.inventory.parent / "home"
    env = {**os.environ, "ZFS_BACKEND_HOME": str(home), "ZFS_BACKEND_INVENTORY": str(world.inventory)}
    return load_settings(env)


@pytest.fixture
def made(vms: dict[str, SSHHost], lab_host: SSHHost) -> Iterator[list[str]]:
    """Datasets a test made: destroyed on every VM and on the lab node afterwards."""
    names: list[str] = []
    yield names
    for host in [*vms.values(), lab_host]:
        z = Zfs(host, timeout=T)
        for name in names:
            ds = parse_dataset(name)
            with contextlib.suppress(Exception):
                if z.dialect.resumable_receive and z.resume_token(ds) is not None:
                    z.abort_resumable_receive(ds)
            z.destroy(ds, recursive=True, missing_ok=True, deadline=120)


def _name(made: list[str]) -> str:
    n = f"tank/m{uuid.uuid4().hex[:8]}"
    made.append(n)
    return n


def _vm(vms: dict[str, SSHHost]) -> SSHHost:
    return vms[sorted(vms)[0]]


def _version(host: SSHHost, ds: str) -> str:
    return Zfs(host, timeout=T).get(parse_dataset(ds), ["version"])["version"]


def test_each_side_knows_the_others_filesystem_version_and_reaches_it_only_through_peer_exec(
    world: MixedWorld, lab_host: SSHHost, vms: dict[str, SSHHost]
) -> None:
    assert Zfs(lab_host, timeout=T).dialect.zpl_version == 4  # zfs upgrade -v on zfs-fuse 0.7
    vm = _vm(vms)
    assert Zfs(vm, timeout=T).dialect.zpl_version == 5  # and on OpenZFS 2.3
    # each node's own key reaches the other over the VMs' network, host keys checked, and runs nothing
    # but peer-exec: a bare command is refused there (by peer-exec, so the path and the keys work)
    for src, dst in ((lab_host, vm.name), (vm, world.node)):
        res = src.run(["ssh", dst, "zfs", "list"], timeout=T, check=False)
        assert res.returncode != 0 and "refused" in res.err_text, (src.name, dst, res.err_text)


def test_lab_node_to_openzfs_vm_full_then_incremental(
    world: MixedWorld,
    mixed_settings: Settings,
    agents: dict[str, Any],
    lab_host: SSHHost,
    vms: dict[str, SSHHost],
    made: list[str],
) -> None:
    vm = _vm(vms)
    ds = _name(made)
    write(lab_host, ds, "a", 4)
    snapshot(lab_host, ds, "s1")
    act = replicate(mixed_settings, agents, f"{world.node}:{ds}@s1", f"{vm.name}:{ds}")
    assert_success(act)
    assert checksums(vm, ds) == checksums(lab_host, ds) != {}
    assert listing(vm, ds) == listing(lab_host, ds)
    assert _version(vm, ds) == "4"  # a zfs-fuse filesystem stays version 4 on OpenZFS

    write(lab_host, ds, "b", 1)
    snapshot(lab_host, ds, "s2")
    act = replicate(mixed_settings, agents, f"{world.node}:{ds}@s2", f"{vm.name}:{ds}")
    assert_success(act)
    assert act.progress[0] <= 1 * MiB * 1.05 + MiB  # an incremental: the change, not the dataset
    assert checksums(vm, ds) == checksums(lab_host, ds)
    assert [s for s, _ in listing(vm, ds) or []] == ["s1", "s2"]
    assert listing(vm, ds) == listing(lab_host, ds)


@pytest.mark.parametrize("version", ["5", "4"])
def test_openzfs_vm_to_lab_node_is_refused_before_any_stream(
    version: str,
    world: MixedWorld,
    mixed_settings: Settings,
    agents: dict[str, Any],
    lab_host: SSHHost,
    vms: dict[str, SSHHost],
    made: list[str],
) -> None:
    """OpenZFS's default filesystem (version 5) and one made at version 4: zfs itself shows why (the
    same stream through the host: version 5 rejected by zfs-fuse's receive, version 4 received but its
    root unreadable there), and the product refuses both in one line, the lab node left as it was."""
    vm = _vm(vms)
    ds = _name(made)
    Zfs(vm, timeout=T).create(parse_dataset(ds), props={"compression": "off", "version": version})
    write(vm, ds, "a", 2)
    snapshot(vm, ds, "s1")
    assert _version(vm, ds) == version
    zl = Zfs(lab_host, timeout=T)

    # zfs itself, no agent involved: the same stream through the host into zfs-fuse's receive
    raw = _name(made)
    lab_ssh = ["ssh", "-F", str(world.lab.layout.ssh_config), world.node]
    rc, err = stream_via_host(
        controller_ssh(vm.name, ["zfs", "send", f"{ds}@s1"]), [*lab_ssh, shlex.join(["zfs", "receive", raw])]
    )
    print(f"zfs-fuse receiving an OpenZFS version {version} filesystem's stream: exit {rc}: {err.strip()}")
    if version == "5":
        assert rc != 0 and "unsupported feature" in err, err
        assert not zl.exists(parse_dataset(raw)), "zfs-fuse kept a partial receive"
    else:
        assert rc == 0, err
        mnt = zl.mountpoint(parse_dataset(raw))
        ls = lab_host.run(["ls", "-la", str(mnt)], timeout=T, check=False)
        print(f"and reading it there: exit {ls.returncode}: {ls.err_text.strip()}")
        assert ls.returncode != 0, f"zfs-fuse reads a filesystem received from OpenZFS: {ls.text}"
        lab_host.run(["zfs", "umount", "-f", raw], timeout=T, check=False)
        zl.destroy(parse_dataset(raw), recursive=True, deadline=120)

    # the product: one line naming why, before any stream; nothing on the lab node
    before = [d.name for d in zl.list_datasets(parse_dataset("tank"), recursive=True)]
    with pytest.raises(UnsupportedFeature) as e:
        act = replicate(mixed_settings, agents, f"{vm.name}:{ds}@s1", f"{world.node}:{ds}")
        act.wait(T)  # (were it to start: its outcome is what the assertion below shows)
        raise AssertionError(f"not refused: {act.state}: {act.record().error}")
    msg = str(e.value)
    print(f"refused: {msg}")
    assert "\n" not in msg
    assert msg.startswith(
        f"{world.node}:{ds} (zfs-fuse) reads filesystems up to version 4 and {vm.name} (openzfs"
    )
    assert "writes them up to version 5" in msg and msg.endswith("nothing changed there")
    assert not zl.exists(parse_dataset(ds))
    assert [d.name for d in zl.list_datasets(parse_dataset("tank"), recursive=True)] == before
