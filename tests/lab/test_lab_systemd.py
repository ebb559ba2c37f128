"""Lab hosts boot systemd: pid 1, units, transient units and the journal, a cgroup of their own,
and nothing of the machine's changed by a host's systemd (its /tmp, /dev, kernel settings)."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from labkit import LabFactory, LabHosts

from nixherd.lab import cgroup

pytestmark = pytest.mark.lab


def run(lab: LabHosts, name: str, script: str, check: bool = True) -> str:
    return lab.ssh(name, "sh", "-c", script, check=check).stdout


def cgroup_exists(relative: str) -> bool:
    """Whether `relative` exists in the cgroup v2 hierarchy, looked up through a cgroup2 mount
    in a throwaway mount namespace (the machine may have none mounted)."""
    script = (
        'd=$(mktemp -d) && mount -t cgroup2 cgroup2 "$d" && '
        'if test -d "$d/$1"; then r=0; else r=1; fi; umount "$d"; rmdir "$d"; exit $r'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "_", relative],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def test_pid_1_is_systemd_and_the_host_runs_its_units(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(2)
    for name in lab.names:
        assert run(lab, name, "cat /proc/1/comm").strip() == "systemd"
        # `--wait`: right after `up` the boot may still be finishing its jobs.
        state = run(lab, name, "systemctl is-system-running --wait", check=False).strip()
        assert state == "running", run(lab, name, "systemctl --failed --no-pager", check=False)
        active = run(lab, name, "systemctl is-active sshd.service nix-daemon.socket")
        assert active.split() == ["active", "active"]
        assert run(lab, name, "hostname").strip() == name
        # None of the machine's own enabled services (cron, its sshd on port 22...): only the
        # lab's and those of the system the host runs (a test may have deployed one).
        units = run(
            lab,
            name,
            "systemctl list-units --type=service --state=running --plain --no-legend --no-pager",
        )
        running = {line.split()[0] for line in units.splitlines() if line.strip()}
        system = run(lab, name, "ls /run/current-system/etc/systemd/system 2>/dev/null || true")
        allowed = {"sshd.service", "systemd-journald.service", "nix-daemon.service"}
        assert running <= allowed | set(system.split()), running


def test_systemd_run_starts_a_transient_unit_and_the_journal_has_it(
    lab_hosts: LabFactory,
) -> None:
    lab = lab_hosts(1)
    unit = f"nh-probe-{secrets.token_hex(4)}"
    # No D-Bus on a host: systemd-run reaches systemd over its private socket (no --wait).
    run(lab, "lab-1", f"systemd-run --unit={unit} --collect --quiet -- sh -c 'echo hello $PATH'")
    journal = run(
        lab,
        "lab-1",
        f"for i in $(seq 100); do journalctl -u {unit} -o cat --no-pager | grep -q hello && "
        f"break; sleep 0.1; done; journalctl -u {unit} -o cat --no-pager",
    )
    # A transient unit gets systemd's default PATH, not the login's (which starts with
    # /run/current-system/sw/bin): why the watchdog's unit sets its environment explicitly.
    assert "hello /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in journal


def test_the_machine_keeps_its_tmp_dev_and_kernel_settings(lab_hosts: LabFactory) -> None:
    # What a booting systemd would change on a machine it shared /tmp and /dev with: tmpfiles
    # empties /tmp and deletes every /tmp/systemd-private-*, journald makes /dev/log.
    token = secrets.token_hex(4)
    private = Path(f"/tmp/systemd-private-nhtest-{token}")
    kept = Path(f"/tmp/nh-keep-{token}")
    private.mkdir()
    kept.write_text("the machine's")
    dev_log = os.path.lexists("/dev/log") and os.path.realpath("/dev/log")
    try:
        lab = lab_hosts(1, fresh=True)
        assert run(lab, "lab-1", "systemctl is-system-running --wait", check=False).strip() == (
            "running"
        )
        lab.reboot("lab-1")  # a second boot: tmpfiles ran twice
        assert private.is_dir()
        assert kept.read_text() == "the machine's"
        assert (os.path.lexists("/dev/log") and os.path.realpath("/dev/log")) == dev_log
        # Inside, the host has its own /dev/log, and the kernel's settings are read-only.
        assert run(lab, "lab-1", "readlink /dev/log").strip() == "/run/systemd/journal/dev-log"
        refused = lab.ssh(
            "lab-1", "sh", "-c", "cat /proc/sys/fs/file-max > /proc/sys/fs/file-max", check=False
        )
        assert refused.returncode != 0
        assert "Read-only file system" in refused.stderr
    finally:
        private.rmdir()
        kept.unlink()


def test_each_host_has_a_cgroup_of_its_own_and_down_removes_it(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(2, fresh=True)
    names = {}
    for host in lab.lab.hosts():
        init = lab.lab.init_process(host)
        assert init is not None
        names[host.name] = cgroup.name_of(host.dir, host.name)
        # As the machine sees it: the host's systemd lives below the lab's own cgroup.
        line = Path(f"/proc/{init[0]}/cgroup").read_text().splitlines()[-1]
        assert line == f"0::/{names[host.name]}/init.scope"
        # Inside, its cgroup namespace makes that the root.
        assert run(lab, host.name, "cat /proc/1/cgroup").strip().endswith("::/init.scope")
        assert cgroup_exists(names[host.name])
    assert names["lab-1"] != names["lab-2"]
    lab.lab.down()
    assert not any(cgroup_exists(name) for name in names.values())


def test_the_journal_survives_a_reboot(lab_hosts: LabFactory) -> None:
    lab = lab_hosts(1, fresh=True)
    token = secrets.token_hex(4)
    run(lab, "lab-1", f"echo before-reboot-{token} | systemd-cat -t nhtest")
    run(lab, "lab-1", "journalctl --flush --sync")
    lab.reboot("lab-1")
    journal = run(lab, "lab-1", "journalctl -t nhtest -o cat --no-pager")
    assert f"before-reboot-{token}" in journal


SLOW_BUILD = (
    'derivation {{ name = "nh-slow-{who}-{token}"; system = builtins.currentSystem; '
    'builder = "/bin/sh"; args = [ "-c" "PATH=/usr/bin:/bin; sleep {seconds}; echo ok > $out" ]; }}'
)


def test_a_machine_build_never_kills_a_host_build(lab_hosts: LabFactory) -> None:
    # Nix kills every process of a build user before it builds as that user. The machine's Nix
    # sees the hosts' processes: with the same uids, its build killed the host's (signal 9).
    lab = lab_hosts(1, fresh=True)
    token = secrets.token_hex(4)
    remote = SLOW_BUILD.format(who="host", token=token, seconds=6)
    host = subprocess.Popen(
        [
            "ssh",
            "-F",
            lab.lab.ssh_config,
            "lab-1",
            "nix-build",
            "--no-out-link",
            "-E",
            f"'{remote}'",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = run(
            lab,
            "lab-1",
            "for i in $(seq 200); do u=$(ps -o user= -C sleep | head -1); "
            'test -n "$u" && break; sleep 0.05; done; echo "$u"',
        ).strip()
        assert started.startswith("nixbld"), started
        local = SLOW_BUILD.format(who="machine", token=token, seconds=1)
        machine = subprocess.run(
            ["nix-build", "--no-out-link", "--option", "substituters", "", "-E", local],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert machine.returncode == 0, machine.stderr
        out, err = host.communicate(timeout=120)
        assert host.returncode == 0, err
        assert out.strip().endswith(f"nh-slow-host-{token}")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
