"""A running lab keeps working while the machine changes under it, and `lab status` tells the truth.

The machine's `useradd` (and apt adding a user) renames a new /etc/passwd, group and shadow into
place. A host whose user database was bind-mounted over those single files lost it at that moment:
sshd then knew no `deploy`, every non-root deploy failed with "Permission denied (publickey)", and
`lab status` still said up because it only read sshd's banner.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from deploykit import by_node, make_fleet
from labkit import LabFactory

from nixherd.run import process

pytestmark = pytest.mark.lab


def lab_status(lab_dir: str) -> tuple[int, str]:
    result = process.run(
        [sys.executable, "-m", "nixherd", "lab", "status", "--dir", lab_dir], check=False
    )
    return result.returncode, result.stdout


def test_a_machine_useradd_leaves_running_hosts_their_users(
    lab_hosts: LabFactory, tmp_path: Path
) -> None:
    lab = lab_hosts(1, fresh=True)
    inode = os.stat("/etc/passwd").st_ino
    name = f"nhlab{os.getpid() % 100000}"
    process.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false", name])
    try:
        assert os.stat("/etc/passwd").st_ino != inode, "useradd replaced /etc/passwd"
        assert lab.ssh("lab-1", "id", "-un", user="deploy").stdout.strip() == "deploy"
        # The host's user database is its own: the machine's new user is not in it.
        assert lab.ssh("lab-1", "getent", "passwd", name, check=False).returncode == 2
        code, out = lab_status(lab.dir)
        assert code == 0, out
        assert "unhealthy" not in out
        fleet = make_fleet(tmp_path / "fleet", lab)
        fleet.write(["lab-1"], users={"lab-1": "deploy"})
        result, report = fleet.apply("switch")
        assert result.returncode == 0, result.stdout + result.stderr
        assert by_node(report)["lab-1"]["result"] == "ok"
        assert fleet.current("lab-1") == by_node(report)["lab-1"]["store_path"]
    finally:
        process.run(["userdel", name], check=False)


def test_status_is_unhealthy_when_no_login_works(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(1, fresh=True)
    host = next(h for h in lab.lab.hosts() if h.name == "lab-1")
    keys = Path(host.authorized_keys)
    accepted = keys.read_text()
    keys.write_text("")  # sshd still answers with its banner, but accepts no key
    try:
        code, out = lab_status(lab.dir)
        assert code == 1
        assert "unhealthy" in out
        assert [s.state for s in lab.lab.status()] == ["unhealthy"]
    finally:
        keys.write_text(accepted)
    code, out = lab_status(lab.dir)
    assert code == 0, out
    assert [s.state for s in lab.lab.status()] == ["up"]


def test_a_host_etc_is_its_own_copy_without_the_machine_secrets(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(1)
    inside = lab.sh("lab-1", "ls /etc/ssh; ls /etc").stdout.split()
    assert not [name for name in inside if name.startswith("ssh_host_")]
    assert "gshadow" not in inside and "shadow-" not in inside
    assert "nix" in inside and "pam.d" in inside  # the rest of the machine's /etc is there
    # Writes inside reach the host's copy only.
    marker = f"nixherd-probe-{os.getpid()}"
    lab.ssh("lab-1", "touch", f"/etc/{marker}")
    assert not os.path.exists(f"/etc/{marker}")
    assert "deploy" in lab.ssh("lab-1", "getent", "passwd", "deploy").stdout


def test_a_host_var_log_is_its_own_directory(lab_hosts: LabFactory) -> None:
    # sshd appends login records to /var/log/wtmp; logrotate renames the machine's file monthly,
    # which a single-file bind mount would not survive (the same hole as /etc/passwd had).
    lab = lab_hosts(1)
    host = next(h for h in lab.lab.hosts() if h.name == "lab-1")
    marker = f"nixherd-probe-{os.getpid()}"
    lab.ssh("lab-1", "touch", f"/var/log/{marker}")
    leaked = os.path.exists(f"/var/log/{marker}")
    if leaked:
        os.unlink(f"/var/log/{marker}")
    assert not leaked, "a write to the host's /var/log reached the machine's"
    inside = set(lab.ssh("lab-1", "ls", "/var/log").stdout.split())
    assert {"wtmp", "btmp", "lastlog", marker} <= inside
    assert inside == set(os.listdir(os.path.join(host.log_dir, "var-log")))
