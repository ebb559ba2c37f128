"""Lab hosts for real: separate stores and names, users, host keys, isolation, down."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import jsonkit
import pytest
from labkit import LabFactory, free_base

from nixherd.errors import LabError
from nixherd.lab.hosts import Lab, port_free, ssh_banner
from nixherd.lab.proc import alive, mounts_under, namespace_pids, starttime
from nixherd.run import nix, process

pytestmark = pytest.mark.lab


def add_to_machine_store(tmp_path: Path, text: str) -> str:
    source = tmp_path / "lab-probe.txt"
    source.write_text(text)
    return process.run(["nix-store", "--add", str(source)]).stdout.strip()


def test_hosts_have_their_own_store_run_and_name(lab_hosts: LabFactory, tmp_path: Path) -> None:
    lab = lab_hosts(2)
    assert [lab.ssh(n, "hostname").stdout.strip() for n in lab.names] == ["lab-1", "lab-2"]
    path = add_to_machine_store(tmp_path, f"only on lab-1 {time.time_ns()}")
    lab.copy("lab-1", path)
    assert lab.ssh("lab-1", "test", "-e", path, check=False).returncode == 0
    assert lab.ssh("lab-2", "test", "-e", path, check=False).returncode == 1
    marker = f"/run/lab-probe-{time.time_ns()}"
    lab.ssh("lab-1", "touch", marker)
    assert lab.ssh("lab-2", "test", "-e", marker, check=False).returncode == 1
    assert not os.path.exists(marker)
    # Inside, the host sees its own processes only, under its own pid 1.
    ps = lab.ssh("lab-1", "ps", "-e", "-o", "pid=,comm=").stdout.split("\n")
    pids = {int(line.split()[0]) for line in ps if line.strip()}
    assert 1 in pids
    assert len(pids) < 20


def test_deploy_user_copies_into_the_store_and_has_sudo(
    lab_hosts: LabFactory, tmp_path: Path
) -> None:
    lab = lab_hosts(2)
    assert lab.ssh("lab-2", "id", "-un", user="deploy").stdout.strip() == "deploy"
    assert lab.ssh("lab-2", "sudo", "-n", "id", "-u", user="deploy").stdout.strip() == "0"
    path = add_to_machine_store(tmp_path, f"from deploy {time.time_ns()}")
    lab.copy("lab-2", path, user="deploy")
    assert lab.ssh("lab-2", "cat", path, user="deploy").stdout.startswith("from deploy")
    # ssh-ng goes through the host's nix-daemon, which trusts deploy as NixOS would.
    other = add_to_machine_store(tmp_path, f"over ssh-ng {time.time_ns()}")
    process.run(
        nix.nix_argv("copy", "--no-check-sigs", "--to", "ssh-ng://deploy@lab-2", other),
        env=lab.nix_env,
    )
    assert lab.ssh("lab-2", "test", "-e", other, check=False).returncode == 0
    # The daemon's socket lives in the host's memory, never in the lab directory (a socket
    # file there would break copying a tree that holds the lab, e.g. a `path:` flake).
    sockets = [
        os.path.join(top, name)
        for top, _, names in os.walk(lab.dir)
        for name in names
        if stat.S_ISSOCK(os.lstat(os.path.join(top, name)).st_mode)
    ]
    assert sockets == []
    # The user exists inside the hosts only: the machine's /etc is untouched.
    inside = lab.ssh("lab-2", "getent", "passwd", "deploy").stdout
    assert "nixherd lab deploy user" in inside
    assert "nixherd lab deploy user" not in Path("/etc/passwd").read_text()
    home = lab.sh("lab-2", 'touch "$HOME/.probe" && pwd', user="deploy").stdout.strip()
    assert home == "/nix/var/lab/home/deploy"


def test_host_keys_are_checked(lab_hosts: LabFactory, tmp_path: Path) -> None:
    lab = lab_hosts(2)
    port = lab.port("lab-1")
    # By address and port, as inventories name the hosts: the `Host 127.0.0.1` entry applies.
    ok = process.run(["ssh", "-F", lab.ssh_config, "-p", str(port), "root@127.0.0.1", "hostname"])
    assert ok.stdout.strip() == "lab-1"
    # A known_hosts giving lab-1 the key of lab-2: refused, both by name and by address.
    lines = Path(lab.dir, "known_hosts").read_text().splitlines()
    key_of = {line.split()[0]: " ".join(line.split()[1:]) for line in lines}
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"lab-1 {key_of['lab-2']}\n[127.0.0.1]:{port} {key_of['lab-2']}\n")
    for destination in (["lab-1"], ["-p", str(port), "root@127.0.0.1"]):
        refused = process.run(
            [
                "ssh",
                "-F",
                lab.ssh_config,
                "-o",
                f"UserKnownHostsFile={wrong}",
                *destination,
                "true",
            ],
            check=False,
        )
        assert refused.returncode == 255
        assert "host key" in refused.stderr.lower() or "identification" in refused.stderr.lower()
    # An unknown host (empty known_hosts) is refused too: StrictHostKeyChecking yes.
    empty = tmp_path / "empty"
    empty.write_text("")
    unknown = process.run(
        ["ssh", "-F", lab.ssh_config, "-o", f"UserKnownHostsFile={empty}", "lab-1", "true"],
        check=False,
    )
    assert unknown.returncode == 255


def test_up_again_keeps_running_hosts(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(2)
    before = {s.name: s for s in lab.lab.status()}
    after = {s.name: s for s in lab.lab.up(2)}
    for name in lab.names:
        assert after[name].up
        assert after[name].pid == before[name].pid
        assert after[name].boots == before[name].boots


def test_kill_inside_a_host_stays_inside(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(1, fresh=True)
    outside = process.spawn(["sleep", "300"])
    try:
        status = lab.status("lab-1")
        assert status.pidns is not None
        host_pids = set(namespace_pids(status.pidns))
        # SIGKILL to every process it may signal: only the host's own die; its pid 1 survives.
        killed = lab.ssh("lab-1", "sh", "-c", "kill -9 -1; kill -9 1; kill 1", check=False)
        assert killed.returncode == 255  # the ssh session itself was killed
        assert outside.poll() is None
        lab.wait_ssh("lab-1")
        again = lab.status("lab-1")
        assert again.pid == status.pid
        assert again.boots == status.boots  # no reboot: pid 1 ignored the signals
        assert again.pidns == status.pidns
        # sshd and nix-daemon were restarted by the host's pid 1 with new pids.
        assert set(namespace_pids(status.pidns)) - host_pids
    finally:
        outside.kill()
        outside.wait()


def test_reboot_inside_restarts_the_host_only(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(1, fresh=True)
    (host,) = lab.lab.hosts()
    before = lab.status("lab-1")
    init_before = lab.lab.init_process(host)
    lab.ssh("lab-1", "touch", "/run/before-reboot")
    lab.reboot("lab-1")
    after = lab.status("lab-1")
    assert after.pid == before.pid  # same supervisor
    assert after.boots == (before.boots or 0) + 1
    # A new pid 1 (pid and start time): a fresh boot. Not the namespace's inode number: the
    # kernel may give the new namespace the number the old one freed (seen once).
    init_after = lab.lab.init_process(host)
    assert init_before is not None and init_after is not None
    assert init_after != init_before
    assert lab.ssh("lab-1", "test", "-e", "/run/before-reboot", check=False).returncode == 1
    assert lab.ssh("lab-1", "hostname").stdout.strip() == "lab-1"


def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def test_down_stops_every_process_and_leaves_no_mount(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(2, fresh=True)
    statuses = lab.lab.status()
    supervisors = [lab.lab.supervisor(h) for h in lab.lab.hosts()]
    processes: list[tuple[int, int]] = []
    for status in statuses:
        assert status.pidns is not None
        for pid in namespace_pids(status.pidns):
            begun = starttime(pid)
            if begun is not None:
                processes.append((pid, begun))
    # status() logs in to each host: a per-login sshd may exit while this looks at it.
    sshd = [pid for pid, _ in processes if exe_of(pid) == "/usr/sbin/sshd"]
    assert len(sshd) >= 2
    assert all(alive(s) for s in supervisors)
    stopped = lab.lab.down()
    assert sorted(stopped) == ["lab-1", "lab-2"]
    assert not any(alive(record) for record in processes)
    assert not any(alive(s) for s in supervisors)
    assert mounts_under(lab.dir) == []
    assert lab.dir not in Path("/proc/mounts").read_text()
    assert all(port_free(lab.port(n)) for n in lab.names)
    assert [s.to_data()["state"] for s in lab.lab.status()] == ["down", "down"]
    # Up again: the same keys and the same store.
    known_hosts = Path(lab.lab.known_hosts).read_text()
    lab.lab.up(2)
    assert Path(lab.lab.known_hosts).read_text() == known_hosts
    assert lab.ssh("lab-2", "hostname").stdout.strip() == "lab-2"


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    base = free_base(2)
    lab = Lab(tmp_path / "lab")
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", base + 1))
            sock.listen()
            with pytest.raises(LabError, match=f"lab-2: 127.0.0.1:{base + 1}"):
                lab.up(2, base_port=base)
        assert not any(s.pid for s in lab.status())
    finally:
        lab.down()


def test_cli_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nixherd.cli import main

    lab_dir = str(tmp_path / "cli-lab")
    base = free_base(2)
    try:
        assert main(["lab", "up", "-n", "2", "--dir", lab_dir, "--base-port", str(base)]) == 0
        out = capsys.readouterr().out
        assert f"port = {base + 1}" in out
        assert f'ssh_config = "{lab_dir}/ssh_config"' in out
        assert ssh_banner(base) and ssh_banner(base + 1)
        assert main(["lab", "status", "--dir", lab_dir, "--json"]) == 0
        data = jsonkit.document(capsys.readouterr().out, "lab status")["hosts"]
        assert [(h["name"], h["port"], h["state"]) for h in data] == [
            ("lab-1", base, "up"),
            ("lab-2", base + 1, "up"),
        ]
        pids = [h["pid"] for h in data]
    finally:
        assert main(["lab", "down", "--dir", lab_dir, "--purge"]) == 0
    assert "stopped 2 hosts" in capsys.readouterr().out
    assert not os.path.exists(lab_dir)
    assert all(starttime(pid) is None for pid in pids)
    assert port_free(base) and port_free(base + 1)
