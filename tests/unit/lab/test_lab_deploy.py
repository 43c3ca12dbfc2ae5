"""``lab.deploy`` without a lab: the play recap parser, failure summaries, ansible's environment."""

from pathlib import Path

from zfs_backend.lab.deploy import PlaybookRun, ansible_dir, ansible_env, parse_recap, role_vars
from zfs_backend.lab.topology import LabLayout

OUTPUT = """
TASK [zfs_backend_node : Check every pool device exists] ***********************
fatal: [node2]: FAILED! => {"assertion": "missing | length == 0", "changed": false, "evaluated_to": false, "msg": "node2: pool device(s) /dev/nope missing (zfs_backend_node_pool_devices); nothing was changed"}

PLAY RECAP *********************************************************************
node1                      : ok=12   changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
node2                      : ok=11   changed=3    unreachable=1    failed=1    skipped=1    rescued=0    ignored=0
"""  # noqa: E501 - ansible's own lines


def test_recap_and_failure():
    recap = parse_recap(OUTPUT)
    assert recap["node1"] == {"ok": 12, "changed": 0, "unreachable": 0, "failed": 0}
    assert recap["node2"] == {"ok": 11, "changed": 3, "unreachable": 1, "failed": 1}
    run = PlaybookRun(2, OUTPUT, recap)
    assert (run.changed, run.failed) == (3, 2)
    assert (
        run.failure()
        == "node2: pool device(s) /dev/nope missing (zfs_backend_node_pool_devices); nothing was changed"
    )


def test_ansible_writes_only_under_the_state_dir(tmp_path: Path):
    env = ansible_env(tmp_path, base={"PATH": "/usr/bin", "HOME": "/root"})
    for key in (
        "ANSIBLE_HOME",
        "ANSIBLE_LOCAL_TEMP",
        "ANSIBLE_SSH_CONTROL_PATH_DIR",
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR",
    ):
        assert env[key].startswith(str(tmp_path)), key
    assert env["ANSIBLE_CONFIG"] == str(ansible_dir() / "ansible.cfg")
    assert (tmp_path / "ansible").stat().st_mode & 0o777 == 0o700


def test_role_vars_keep_the_wheelhouse_in_the_lab(tmp_path: Path):
    lay = LabLayout.for_dir(tmp_path, "198.18.120.0/24")
    v = role_vars(lay, 1 << 30, provisioned=True)
    assert v["zfs_backend_node_wheelhouse"] == str(tmp_path / "wheelhouse")
    assert v["zfs_backend_node_pool_file_size"] == str(1 << 30)
    assert v["zfs_backend_lab_provisioned"] is True
