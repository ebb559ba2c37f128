"""The lab hosts' own programs and process bookkeeping: what a host's end means, the reboot
guard, pid + start time identity, and the checks `up` makes before starting anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from nixherd.errors import LabError
from nixherd.lab import boot, hostinit, proc
from nixherd.lab.hosts import Lab


def wait_status(*, exit_code: int | None = None, sig: int | None = None) -> int:
    """A raw wait status as waitpid(2) reports it."""
    if sig is not None:
        return sig
    assert exit_code is not None
    return exit_code << 8


def test_what_the_end_of_a_host_means() -> None:
    # reboot(2) inside a PID namespace: its init dies of SIGHUP (restart) or SIGINT (power off).
    assert boot.boot_outcome(wait_status(sig=signal.SIGHUP)) == "reboot"
    assert boot.boot_outcome(wait_status(sig=signal.SIGINT)) == "poweroff"
    assert boot.boot_outcome(wait_status(sig=signal.SIGKILL)) == "killed by SIGKILL"
    assert boot.boot_outcome(wait_status(exit_code=1)) == "exited with 1"


def test_a_real_reboot_status_from_a_child_killed_by_sighup() -> None:
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGHUP)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert boot.boot_outcome(status) == "reboot"


def test_usage_errors() -> None:
    assert boot.main([]) == 2
    assert boot.main(["bogus"]) == 2
    assert boot.main(["supervise"]) == 2
    assert boot.main(["init", "/x"]) == 2  # pid 1 is hostinit.py's now
    assert hostinit.main([]) == 2
    assert hostinit.main(["relative/dir"]) == 2
    assert hostinit.main(["reboot", "now"]) == 2


def test_a_process_is_its_pid_and_start_time() -> None:
    me = os.getpid()
    begun = proc.starttime(me)
    assert begun is not None
    assert proc.alive((me, begun))
    assert not proc.alive((me, begun + 1))  # same pid, another process
    assert not proc.alive(None)
    assert proc.parent_of(me) == os.getppid()


def test_a_zombie_is_not_alive() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while proc.starttime(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        # Exited but not reaped yet: only its zombie is left, which runs nothing.
        assert Path(f"/proc/{pid}").exists()
        assert proc.starttime(pid) is None
    finally:
        os.waitpid(pid, 0)


def test_mounts_under() -> None:
    assert proc.mounts_under("/") != []
    assert proc.mounts_under("/nonexistent-nixherd-lab") == []


def test_lab_directory_must_be_writable_bare_into_configs(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="use a path of"):
        Lab(tmp_path / "with space")
    assert Lab(tmp_path / "ok").dir == str(tmp_path / "ok")


def test_up_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        Lab(tmp_path / "lab").up(1)
    assert not (tmp_path / "lab").exists()


def test_status_of_an_empty_lab(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "none")
    assert lab.status() == []
    assert lab.down() == []


def test_the_nix_mount_point_is_made_when_the_machine_has_none(tmp_path: Path) -> None:
    # A machine where Nix never ran has no /nix: mounting a host's store there failed (ENOENT).
    point = tmp_path / "nix"
    hostinit.ensure_mount_point(str(point))
    assert point.is_dir()
    assert point.stat().st_mode & 0o777 == 0o755
    (point / "kept").write_text("")
    hostinit.ensure_mount_point(str(point))  # an existing one is left as it is
    assert (point / "kept").exists()


@pytest.mark.parametrize("directory", ["/var/tmp/lab", "/run/lab", "/nix/lab", "/etc/lab", "/var"])
def test_a_lab_directory_below_what_hosts_mount_over_is_refused(directory: str) -> None:
    # Each host mounts its own /var, /run, /nix, /etc: a lab directory there would vanish from
    # its own hosts' sight (their sshd reads its config and keys from it).
    with pytest.raises(LabError, match="not below"):
        Lab(directory)
    Lab("/tmp/nh-lab-ok")  # elsewhere is fine
