"""A lab host's systemd configuration: the base units, the masks, tmpfiles overrides, nix.conf."""

from __future__ import annotations

import configparser

from nixherd.lab import render, units


def base() -> dict[str, str]:
    return units.base_units("lab-3", "/srv/lab/hosts/lab-3/sshd_config", "/srv/lab/sshd.log")


def test_only_the_lab_s_own_services_are_enabled() -> None:
    tree = base()
    wanted = sorted(k for k in tree if ".wants/" in k)
    assert wanted == [
        "multi-user.target.wants/sshd.service",
        "sockets.target.wants/nix-daemon.socket",
    ]
    assert tree["default.target"] == "/lib/systemd/system/multi-user.target"


def test_units_that_would_change_the_machine_or_need_dbus_are_masked() -> None:
    tree = base()
    for unit in (
        "systemd-sysctl.service",
        "systemd-modules-load.service",
        "systemd-binfmt.service",
        "systemd-journald-audit.socket",
        "systemd-logind.service",
        "dbus.socket",
        "getty.target",
    ):
        assert tree[unit] == "/dev/null", unit
        assert units.is_link(tree[unit])


def test_the_sshd_unit_keeps_sessions_across_a_restart_and_never_gives_up() -> None:
    text = base()["sshd.service"]
    assert not units.is_link(text)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    assert unit["Service"]["KillMode"] == "process"
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["ExecStart"].split() == [
        "/usr/sbin/sshd",
        "-D",
        "-f",
        "/srv/lab/hosts/lab-3/sshd_config",
        "-E",
        "/srv/lab/sshd.log",
    ]


def test_tmpfiles_rules_on_shared_directories_are_masked() -> None:
    tree = units.tmpfiles()
    # `D /tmp` would empty the machine's /tmp; `R! /tmp/systemd-private-*` delete the others'.
    for name in ("tmp.conf", "systemd-tmp.conf", "x11.conf", "home.conf", "provision.conf"):
        assert tree[name] == "/dev/null"
    assert "d /nix/var/nix/daemon-socket 0755 root root" in tree["nix-daemon.conf"]


def test_nix_conf_trusts_root_and_deploy_once() -> None:
    text = render.nix_conf("sandbox = false\ntrusted-users = alice\n")
    assert text.splitlines() == ["sandbox = false", "trusted-users = root deploy"]
    assert render.nix_conf("").splitlines() == ["trusted-users = root deploy"]
