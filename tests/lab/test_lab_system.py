"""Lab systems (nix/lab.nix) on a real systemd host: switch-to-configuration as NixOS's contract
says (units started, restarted, reloaded, stopped; exit 1/2/4; boot, test, dry-activate; the boot
default after a reboot), and the misbehaviours deploy tests rely on (failing, hanging, cutting SSH
off). The contract and its sources: docs/lab.md."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import LabFactory, LabHosts, free_ports, http_get, lab_system

from nixherd.errors import CommandError
from nixherd.run import process

pytestmark = [pytest.mark.lab, pytest.mark.nix]

HOST = "lab-1"
PROFILE = "/nix/var/nix/profiles/system"


@pytest.fixture(scope="module")
def port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def systems(port: int) -> dict[str, str]:
    """Generations of one node: the responder on one port (reloaded, not restarted, when it
    changes), a worker whose environment changes, a steady unit that never does."""
    host = f'networking.hostName = "{HOST}";'
    steady = (
        'systemd.services.steady = { script = "exec sleep 1000000"; '
        'wantedBy = [ "multi-user.target" ]; };'
    )

    def generation(version: str, extra: str = "", worker: bool = True) -> str:
        parts = [
            host,
            steady,
            f'lab.version = "{version}"; lab.files."v" = "{version}";',
            f"lab.service.port = {port}; systemd.services.app.reloadIfChanged = true;",
        ]
        if worker:
            parts.append(
                "systemd.services.worker = { "
                f'script = "echo worker {version}; exec sleep 1000000"; '
                f'environment.V = "{version}"; wantedBy = [ "multi-user.target" ]; }};'
            )
        return lab_system("{ " + " ".join([*parts, extra]) + " }")

    return {
        "a": generation("a"),
        "b": generation(
            "b",
            'systemd.services.extra = { script = "exec sleep 1000000"; '
            'wantedBy = [ "multi-user.target" ]; };',
        ),
        "c": generation("c", worker=False),
        "activation": generation("fa", "lab.fail.activation = true;"),
        "boot": generation("fb", "lab.fail.boot = true;"),
        "hang": generation("hang", "lab.fail.hang = true;"),
        "cut": generation("cut", "lab.fail.cutSsh = true;"),
        "sshd": generation("a", 'systemd.services.sshd.restartTriggers = [ "keys-2" ];'),
        # A service that exits before it listens: its start fails.
        "broken": lab_system(
            f"{{ {host} {steady} "
            f'lab.service = {{ port = {port}; command = "echo no; exit 3"; }}; }}'
        ),
    }


@pytest.fixture(scope="module")
def host(lab_hosts: LabFactory, systems: dict[str, str]) -> LabHosts:
    lab = lab_hosts(1, fresh=True)
    lab.copy(HOST, *systems.values())
    return lab


def stc(
    lab: LabHosts, path: str, action: str, *, profile: bool = True, env: str = ""
) -> process.Result:
    """`switch-to-configuration ACTION` of `path` as root (the profile set first, as deploys
    do), whatever its exit code."""
    script = f'{env} exec "$1/bin/switch-to-configuration" "$2"'
    if profile:
        script = f'nix-env -p {PROFILE} --set "$1" >/dev/null && {script}'
    return lab.ssh(HOST, "sh", "-c", script, "stc", path, action, check=False, timeout=120)


def ok(result: process.Result) -> process.Result:
    assert result.returncode == 0, result.stderr
    return result


def current(lab: LabHosts) -> str:
    return lab.ssh(HOST, "readlink", "/run/current-system").stdout.strip()


def main_pid(lab: LabHosts, unit: str) -> int:
    return int(lab.ssh(HOST, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout)


def state(lab: LabHosts, unit: str) -> str:
    return lab.ssh(HOST, "systemctl", "is-active", unit, check=False).stdout.strip()


def responder(port: int) -> dict[str, object]:
    """The responder's /status: what it serves, its pid and how many reloads it did."""
    code, body = http_get(port, "/status")
    assert code == 200, body
    answer: dict[str, object] = json.loads(body)
    return answer


def test_usage_and_root_only(host: LabHosts, systems: dict[str, str]) -> None:
    tool = f"{systems['a']}/bin/switch-to-configuration"
    for words in (["reboot"], []):
        bad = host.ssh(HOST, tool, *words, check=False)
        assert bad.returncode == 1
        assert "Usage: switch-to-configuration [switch|boot|test|dry-activate]" in bad.stderr
    as_deploy = host.ssh(HOST, tool, "test", user="deploy", check=False)
    assert as_deploy.returncode == 1
    assert "must be run as the root user" in as_deploy.stderr


def test_switch_starts_restarts_reloads_and_stops_units(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    a, b, c = systems["a"], systems["b"], systems["c"]
    first = ok(stc(host, a, "switch"))
    assert "the following new units were started: app.service, steady.service, worker.service" in (
        first.stderr
    )
    assert current(host) == a
    assert host.ssh(HOST, "readlink", "/nix/var/lab/boot-default").stdout.strip() == a
    assert host.ssh(HOST, "cat", "/nix/var/lab/etc/v").stdout == "a"
    app, worker, steady = (main_pid(host, u) for u in ("app", "worker", "steady"))
    assert responder(port) == {"node": HOST, "version": "a", "system": a, "pid": app, "reloads": 0}

    # b: worker changed (stopped, started), app changed with reloadIfChanged (reloaded: same
    # pid, it serves b now), steady unchanged (untouched), extra new (started by its target).
    second = ok(stc(host, b, "switch"))
    assert "stopping the following units: worker.service" in second.stderr
    assert "reloading the following units: app.service" in second.stderr
    assert "the following new units were started: extra.service" in second.stderr
    assert main_pid(host, "worker") not in (0, worker)
    assert main_pid(host, "steady") == steady
    assert responder(port) == {"node": HOST, "version": "b", "system": b, "pid": app, "reloads": 1}
    assert state(host, "extra") == "active"
    environment = host.ssh(HOST, "systemctl", "show", "-p", "Environment", "worker").stdout
    assert "V=b" in environment

    # c: worker and extra are gone from the system: stopped, their links removed. The host's
    # own units are regular files a lab system never touches.
    third = ok(stc(host, c, "switch"))
    assert "stopping the following units: extra.service, worker.service" in third.stderr
    assert (state(host, "worker"), state(host, "extra")) == ("inactive", "inactive")
    listing = host.sh(HOST, "cd /etc/systemd/system && ls . multi-user.target.wants").stdout
    assert "worker.service" not in listing and "extra.service" not in listing
    assert "steady.service" in listing
    kinds = host.sh(HOST, "stat -c %F /etc/systemd/system/sshd.service").stdout.strip()
    assert kinds == "regular file"
    assert main_pid(host, "steady") == steady
    assert responder(port)["version"] == "c"


def test_the_responder_rereads_what_it_serves_on_reload(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    # What `data push` with `reload = ["systemctl", "reload", "app"]` relies on.
    ok(stc(host, systems["a"], "switch"))
    before = responder(port)
    assert http_get(port, "/data/backends.json")[0] == 404
    host.sh(HOST, "mkdir -p /nix/var/lab/data && echo '[1, 2]' >/nix/var/lab/data/backends.json")
    assert http_get(port, "/data/backends.json")[0] == 404  # not before the reload
    host.ssh(HOST, "systemctl", "reload", "app")
    assert http_get(port, "/data/backends.json") == (200, b"[1, 2]\n")
    after = responder(port)
    assert after["pid"] == before["pid"]
    assert after["reloads"] == int(str(before["reloads"])) + 1
    host.ssh(HOST, "rm", "-r", "/nix/var/lab/data")


def test_dry_activate_says_and_changes_nothing(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    ok(stc(host, systems["c"], "switch"))
    before = responder(port)
    links = host.sh(HOST, "ls -lR /etc/systemd/system").stdout
    dry = ok(stc(host, systems["a"], "dry-activate", profile=False))
    assert "would reload the following units: app.service" in dry.stderr
    assert f"would activate the configuration {systems['a']}" in dry.stderr
    assert current(host) == systems["c"]
    assert responder(port) == before
    assert host.sh(HOST, "ls -lR /etc/systemd/system").stdout == links


def test_a_unit_that_fails_exits_4(host: LabHosts, systems: dict[str, str], port: int) -> None:
    ok(stc(host, systems["a"], "switch"))
    failed = stc(host, systems["broken"], "test")
    assert failed.returncode == 4, failed.stderr
    assert "warning: the following units failed: app.service" in failed.stderr
    assert "the service exited before it listened" in failed.stdout + failed.stderr
    assert host.ssh(HOST, "systemctl", "is-failed", "app.service", check=False).stdout == "failed\n"
    assert current(host) == systems["broken"]  # the switch happened; a unit failed
    # Back to a: the failed unit is started again, as the new system's.
    ok(stc(host, systems["a"], "switch"))
    assert responder(port)["version"] == "a"


def test_a_failing_activation_exits_2_and_the_switch_goes_on(
    host: LabHosts, systems: dict[str, str]
) -> None:
    ok(stc(host, systems["a"], "switch"))
    worker = main_pid(host, "worker")
    failed = stc(host, systems["activation"], "test", profile=False)
    assert failed.returncode == 2, failed.stderr
    assert "lab.fail.activation" in failed.stderr
    assert "Failed to run activate script" in failed.stderr
    # As NixOS's: the units are still handled after a failed activation.
    assert current(host) == systems["activation"]
    assert main_pid(host, "worker") not in (0, worker)
    assert "V=fa" in host.ssh(HOST, "systemctl", "show", "-p", "Environment", "worker").stdout
    ok(stc(host, systems["a"], "switch"))


def test_a_failing_boot_loader_exits_1_and_changes_nothing(
    host: LabHosts, systems: dict[str, str]
) -> None:
    ok(stc(host, systems["a"], "switch"))
    before = host.sh(HOST, "readlink /nix/var/lab/boot-default; ls -lR /etc/systemd/system").stdout
    worker = main_pid(host, "worker")
    failed = stc(host, systems["boot"], "switch", profile=False)
    assert failed.returncode == 1
    assert "Failed to install bootloader" in failed.stderr
    assert current(host) == systems["a"]
    assert main_pid(host, "worker") == worker
    after = host.sh(HOST, "readlink /nix/var/lab/boot-default; ls -lR /etc/systemd/system").stdout
    assert after == before


def test_boot_sets_the_boot_default_only(host: LabHosts, systems: dict[str, str]) -> None:
    a, b = systems["a"], systems["b"]
    ok(stc(host, a, "switch"))
    worker = main_pid(host, "worker")
    booted = ok(stc(host, b, "boot"))
    assert "installing" not in booted.stderr
    assert current(host) == a
    assert main_pid(host, "worker") == worker
    assert host.ssh(HOST, "readlink", "/nix/var/lab/boot-default").stdout.strip() == b
    # One entry per generation of the profile; NIXOS_INSTALL_BOOTLOADER=1 installs the loader
    # afresh and rewrites every entry (a stray file in the entries goes).
    entries = "/nix/var/lab/boot/entries"
    generation = host.ssh(HOST, "readlink", PROFILE).stdout.strip().split("-")[1]
    assert (
        host.ssh(HOST, "readlink", f"{entries}/nixos-generation-{generation}").stdout.strip() == b
    )
    loader = host.ssh(HOST, "cat", "/nix/var/lab/boot/loader").stdout
    host.ssh(HOST, "touch", f"{entries}/stray")
    ok(stc(host, b, "boot"))
    assert host.ssh(HOST, "cat", "/nix/var/lab/boot/loader").stdout == loader
    assert host.ssh(HOST, "test", "-e", f"{entries}/stray", check=False).returncode == 0
    installed = ok(stc(host, b, "boot", env="NIXOS_INSTALL_BOOTLOADER=1"))
    assert "installing the lab boot loader" in installed.stderr
    assert host.ssh(HOST, "cat", "/nix/var/lab/boot/loader").stdout != loader
    assert host.ssh(HOST, "test", "-e", f"{entries}/stray", check=False).returncode == 1
    assert (
        host.ssh(HOST, "readlink", f"{entries}/nixos-generation-{generation}").stdout.strip() == b
    )
    assert current(host) == a


def test_a_reboot_brings_the_boot_default_and_its_units_up(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    a, b = systems["a"], systems["b"]
    ok(stc(host, b, "boot"))
    ok(stc(host, a, "test", profile=False))  # now a, but b boots
    assert current(host) == a
    host.reboot(HOST)
    assert current(host) == b
    assert host.ssh(HOST, "readlink", "/run/booted-system").stdout.strip() == b
    for unit in ("app", "worker", "steady", "extra", "sshd"):
        assert state(host, unit) == "active", unit
    assert responder(port)["version"] == "b"
    assert "V=b" in host.ssh(HOST, "systemctl", "show", "-p", "Environment", "worker").stdout
    ok(stc(host, a, "switch"))


@pytest.fixture
def master(host: LabHosts) -> Iterator[list[str]]:
    """ssh options reusing one open connection, as the deployer's ControlMaster does."""
    socket = f"/tmp/nh-lab-{os.getpid()}-{time.monotonic_ns()}"
    options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={socket}"]
    options += ["-o", "ControlPersist=60"]
    process.run(["ssh", "-F", host.ssh_config, *options, HOST, "true"], timeout=30)
    try:
        yield options
    finally:
        process.run(["ssh", "-F", host.ssh_config, *options, "-O", "exit", HOST], check=False)
        assert not Path(socket).exists()


def test_a_drop_in_restarts_the_hosts_sshd_while_a_session_stays(
    host: LabHosts, systems: dict[str, str], master: list[str]
) -> None:
    ok(stc(host, systems["a"], "switch"))
    sshd = main_pid(host, "sshd")

    def through_master(*words: str) -> process.Result:
        return process.run(["ssh", "-F", host.ssh_config, *master, HOST, *words], timeout=60)

    path = systems["sshd"]
    switched = through_master(f"{path}/bin/switch-to-configuration", "test")
    assert "sshd.service" in switched.stderr
    assert through_master("systemctl", "show", "-p", "MainPID", "--value", "sshd").stdout != (
        f"{sshd}\n"
    )
    assert through_master("readlink", "/run/current-system").stdout.strip() == path
    # A new login reaches the new sshd.
    assert host.ssh(HOST, "true", multiplex=False).returncode == 0
    # Back: the drop-in is gone, so sshd changes (restarts) again.
    restarted = main_pid(host, "sshd")
    ok(stc(host, systems["a"], "switch"))
    assert main_pid(host, "sshd") not in (0, restarted)
    assert (
        host.ssh(
            HOST, "test", "-e", "/etc/systemd/system/sshd.service.d/overrides.conf", check=False
        ).returncode
        == 1
    )


def test_hanging_activation_hangs_until_killed(host: LabHosts, systems: dict[str, str]) -> None:
    ok(stc(host, systems["a"], "switch"))
    pidfile = "/run/lab-test-hang.pid"
    with pytest.raises(CommandError) as hung:
        host.ssh(
            HOST,
            "sh",
            "-c",
            f'echo $$ >{pidfile}; exec "$1/bin/switch-to-configuration" test',
            "hang",
            systems["hang"],
            timeout=5,
            multiplex=False,
        )
    assert hung.value.returncode is None  # timed out
    # Killed whole, as the deployer's watchdog does: the switch's process group, by its pid.
    # (dash's kill takes no `--`: a negative pid names the group.)
    host.sh(HOST, f'kill -KILL "-$(cat {pidfile})" && rm {pidfile}')
    ok(stc(host, systems["a"], "switch"))
    assert current(host) == systems["a"]


def test_cut_ssh_is_undone_by_activating_the_previous_system(
    host: LabHosts, systems: dict[str, str], port: int, master: list[str]
) -> None:
    a, cut = systems["a"], systems["cut"]
    ok(stc(host, a, "switch"))

    def through_master(*words: str) -> process.Result:
        return process.run(["ssh", "-F", host.ssh_config, *master, HOST, *words], timeout=60)

    out = through_master(f"{cut}/bin/switch-to-configuration", "test")
    assert "lab.fail.cutSsh" in out.stderr
    # New connections hang (the listener is frozen); the open one still works.
    started = time.monotonic()
    fresh = process.run(
        ["ssh", "-F", host.ssh_config, "-o", "ConnectTimeout=2", HOST, "true"],
        check=False,
        timeout=20,
    )
    assert fresh.returncode == 255
    assert time.monotonic() - started >= 2  # it waited for a banner that never came
    assert through_master("readlink", "/run/current-system").stdout.strip() == cut
    assert responder(port)["version"] == "cut"
    # Rolling back to the previous system thaws sshd.
    through_master(f"{a}/bin/switch-to-configuration", "test")
    assert host.ssh(HOST, "readlink", "/run/current-system", timeout=10).stdout.strip() == a
