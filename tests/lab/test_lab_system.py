"""Lab systems (nix/lab.nix) on a real host: switch/boot/test/dry-activate as NixOS means them,
and the misbehaviours deploy tests rely on (failing, hanging, cutting SSH off)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import LabFactory, LabHosts, free_ports, http_json, lab_system

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
    """Lab systems that share a service port (as generations of one node do)."""
    common = f'networking.hostName = "{HOST}"; lab.service.port = {port};'

    def build(version: str, extra: str = "") -> str:
        return lab_system(
            f'{{ {common} lab.version = "{version}"; lab.files."v" = "{version}"; {extra} }}'
        )

    return {
        "a": build("a"),
        "b": build("b"),
        "fail": build("fail", "lab.fail.activation = true;"),
        "hang": build("hang", "lab.fail.hang = true;"),
        "cut": build("cut", "lab.fail.cutSsh = true;"),
        "broken": lab_system(
            f'{{ networking.hostName = "{HOST}"; lab.version = "broken"; '
            f'lab.service = {{ port = {port}; command = "exit 3"; }}; }}'
        ),
    }


@pytest.fixture(scope="module")
def host(lab_hosts: LabFactory, systems: dict[str, str]) -> LabHosts:
    lab = lab_hosts(1, fresh=True)
    lab.copy(HOST, *systems.values())
    return lab


def current(lab: LabHosts) -> str:
    return lab.ssh(HOST, "readlink", "/run/current-system").stdout.strip()


def activate(lab: LabHosts, path: str, action: str, *, profile: bool = True) -> None:
    words = [f"{path}/bin/switch-to-configuration", action]
    if profile:
        lab.ssh(HOST, "nix-env", "-p", PROFILE, "--set", path)
    lab.ssh(HOST, *words)


def test_switch_test_boot_and_dry_activate(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    a, b = systems["a"], systems["b"]
    activate(host, a, "switch")
    assert current(host) == a
    assert http_json(port)["version"] == "a"
    assert host.ssh(HOST, "cat", "/nix/var/lab/etc/v").stdout == "a"
    # test: active now, but the next boot comes back to the boot default.
    activate(host, b, "test", profile=False)
    assert current(host) == b
    assert http_json(port)["version"] == "b"  # the service was restarted on the same port
    host.reboot(HOST)
    assert current(host) == a
    assert host.ssh(HOST, "readlink", "/run/booted-system").stdout.strip() == a
    assert http_json(port)["version"] == "a"
    # boot: nothing changes now, the new system comes up at the next boot.
    activate(host, b, "boot")
    assert current(host) == a
    assert http_json(port)["version"] == "a"
    host.reboot(HOST)
    assert current(host) == b
    assert http_json(port)["version"] == "b"
    # dry-activate: says what would change, changes nothing.
    out = host.ssh(HOST, f"{a}/bin/switch-to-configuration", "dry-activate").stdout
    assert f"would activate {a}" in out
    assert "would change etc/v" in out
    assert current(host) == b
    assert http_json(port)["version"] == "b"
    # A rollback as NixOS does it: the profile's previous generation, switched to.
    host.ssh(HOST, "nix-env", "-p", PROFILE, "--rollback")
    previous = host.ssh(HOST, "readlink", "-f", PROFILE).stdout.strip()
    assert previous == a
    activate(host, previous, "switch", profile=False)
    assert current(host) == a
    assert host.ssh(HOST, "nixos-version").stdout.strip() == "a"


def test_usage_and_root_only(host: LabHosts, systems: dict[str, str]) -> None:
    bad = host.ssh(HOST, f"{systems['a']}/bin/switch-to-configuration", "reboot", check=False)
    assert bad.returncode == 1
    assert "Usage" in bad.stderr
    as_deploy = host.ssh(
        HOST, f"{systems['a']}/bin/switch-to-configuration", "test", user="deploy", check=False
    )
    assert as_deploy.returncode == 1
    assert "root" in as_deploy.stderr


def test_failing_activation_stops_half_way(
    host: LabHosts, systems: dict[str, str], port: int
) -> None:
    activate(host, systems["a"], "switch")
    service_before = host.ssh(HOST, "cat", "/run/lab/service.pid").stdout
    failed = host.ssh(HOST, f"{systems['fail']}/bin/switch-to-configuration", "test", check=False)
    assert failed.returncode == 1
    assert "lab.fail.activation" in failed.stderr
    # Half done: the system link and files moved, the service was not restarted.
    assert current(host) == systems["fail"]
    assert host.ssh(HOST, "cat", "/nix/var/lab/etc/v").stdout == "fail"
    assert host.ssh(HOST, "cat", "/run/lab/service.pid").stdout == service_before
    assert http_json(port)["version"] == "a"
    activate(host, systems["a"], "switch")
    assert current(host) == systems["a"]


def test_a_service_that_does_not_listen_fails_the_switch(
    host: LabHosts, systems: dict[str, str]
) -> None:
    broken = host.ssh(HOST, f"{systems['broken']}/bin/switch-to-configuration", "test", check=False)
    assert broken.returncode == 4
    assert "does not listen" in broken.stderr
    activate(host, systems["a"], "switch")


def test_hanging_activation_hangs(host: LabHosts, systems: dict[str, str]) -> None:
    with pytest.raises(CommandError) as hung:
        host.ssh(
            HOST,
            f"{systems['hang']}/bin/switch-to-configuration",
            "test",
            timeout=3,
            multiplex=False,
        )
    assert hung.value.returncode is None  # timed out
    activate(host, systems["a"], "switch")
    assert current(host) == systems["a"]


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


def test_cut_ssh_is_undone_by_activating_the_previous_system(
    host: LabHosts, systems: dict[str, str], port: int, master: list[str]
) -> None:
    a, cut = systems["a"], systems["cut"]
    activate(host, a, "switch")

    def through_master(*words: str) -> process.Result:
        return process.run(["ssh", "-F", host.ssh_config, *master, HOST, *words], timeout=30)

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
    assert http_json(port)["version"] == "cut"
    # Rolling back to the previous system thaws sshd.
    through_master(f"{a}/bin/switch-to-configuration", "test")
    assert host.ssh(HOST, "readlink", "/run/current-system", timeout=10).stdout.strip() == a
