"""An activation nobody has confirmed yet, on real lab hosts: a reboot in the middle of it, a
deployer killed in the middle of it, a second run of the same system during it, an activation
that hangs past its timeout, and a /run/nixherd that another user controls."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest
from safetykit import (
    HostPool,
    activation_status,
    apply_running,
    boot_default,
    by_node,
    cmdline,
    deployed_single,
    descendants,
    host_pool,
    out,
    wait_for,
)

from nixherd.events import Event, LogLine
from nixherd.node.activation import ActivationError, ActivationOptions, activate
from nixherd.node.checks import CheckKind, HealthCheck
from nixherd.node.goal import Goal
from nixherd.run.ssh import Connection, Target

pytestmark = [pytest.mark.lab, pytest.mark.nix]

POOL_PORTS = 16


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    yield from host_pool(tmp_path_factory, "unconfirmed-lab", POOL_PORTS)


def target_of(hosts: HostPool, host: str) -> Target:
    return Target(
        node="alpha",
        host="127.0.0.1",
        port=hosts.lab.port(host),
        ssh_config=hosts.lab.ssh_config,
    )


def test_reboot_mid_activation_boots_the_previous_system_and_the_deployer_says_so_at_once(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")
    assert v1 is not None
    # The new system's service takes a while to listen: the activation is under way for seconds.
    port = fleet.port("alpha")
    slow = {"port": port, "command": "sleep 4; exec python3 -m http.server $PORT --bind 127.0.0.1"}
    fleet.write({"alpha": {"vars": {"version": "2", "service": slow}}})
    with apply_running(fleet, "--confirm-timeout", "60") as (deployer, report_file):
        wait_for(
            lambda: (fleet.current("alpha") or "").endswith("-alpha-2"),
            timeout=120,
            what="the switch to begin",
        )
        hosts.lab.reboot(a, timeout=60)
        rebooted = time.monotonic()
        # Unconfirmed, the new system never became what boots: the host is back on v1.
        assert fleet.current("alpha") == v1
        assert fleet.profile("alpha") == v1
        assert boot_default(hosts.lab, a) == v1
        # The deployer notices the new boot at once (not after the activation timeout).
        assert deployer.wait(timeout=60) == 1, (fleet.dir / "apply.log").read_text()
        noticed = time.monotonic() - rebooted
    assert noticed < 15, noticed
    node = by_node(jsonkit.document(report_file.read_text(), "apply"))["alpha"]
    assert node["result"] == "rolled back", node
    assert node["rolled_back"] is True
    assert "rebooted" in node["error"]["message"]
    assert f"it runs {v1}" in node["error"]["message"]
    # Nothing is left to roll back later, and the next deploy goes through.
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    assert (fleet.current("alpha") or "").endswith("-alpha-2")
    assert boot_default(hosts.lab, a).endswith("-alpha-2")


def test_redeploy_after_the_deployer_died_mid_activation_is_never_up_to_date(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    # A check slow enough that the deployer is killed while the node waits for its confirmation.
    slow = {"command": ["sleep", "60"], "timeout": 8, "retries": 0}
    fleet.write({"alpha": {"vars": {"version": "2"}, "checks": {"slow": slow}}})
    with apply_running(fleet, "--confirm-timeout", "3") as (deployer, _):
        wait_for(
            lambda: activation_status(hosts.lab, a) == "waiting",
            timeout=120,
            what="the activation to wait for its confirmation",
        )
        # SIGKILL: no chance to clean up; its ssh children go with it (its own process group).
        os.killpg(deployer.pid, signal.SIGKILL)
        deployer.wait()
    v2 = fleet.current("alpha")
    assert v2 is not None and v2.endswith("-alpha-2")

    # The same system again (checks are no part of it): the node runs it, but unconfirmed.
    fleet.write({"alpha": {"vars": {"version": "2"}}})
    result, data = fleet.apply("switch", "--confirm-timeout", "3")
    assert result.ok, out(result)
    node = by_node(data)["alpha"]
    assert node["result"] == "ok", node
    # No activation is left that would roll the node back later.
    assert activation_status(hosts.lab, a) == "confirmed"
    assert not hosts.lab.ssh(a, "test", "-e", "/run/nixherd/lock", check=False).ok
    time.sleep(4)
    assert fleet.current("alpha") == v2
    assert fleet.profile("alpha") == v2
    assert boot_default(hosts.lab, a) == v2


def test_second_run_of_the_same_system_waits_for_the_first_and_reports_the_truth(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")
    fleet.write({"alpha": {"vars": {"version": "2"}}})
    result, data = fleet.apply("push")
    assert result.ok, out(result)
    v2 = by_node(data)["alpha"]["store_path"]

    # The first run activates v2, then its check fails after a while: it rolls the node back.
    late = HealthCheck(
        "late", CheckKind.COMMAND, command=("sh", "-c", "sleep 6; exit 1"), timeout=20, retries=0
    )
    first: dict[str, Any] = {}

    def deploy_first() -> None:
        with Connection(target_of(hosts, a)) as conn:
            try:
                activate(
                    conn, v2, ActivationOptions(Goal.SWITCH, "alpha"), checks=[late], emit=ignore
                )
            except ActivationError as exc:
                first["error"] = exc

    thread = threading.Thread(target=deploy_first)
    thread.start()
    try:
        wait_for(
            lambda: activation_status(hosts.lab, a) == "waiting",
            timeout=60,
            what="the first run's activation",
        )
        assert fleet.current("alpha") == v2
        # The second run of the same system, while the first one's check runs.
        result, data = fleet.apply("switch")
    finally:
        thread.join()
    assert first["error"].rolled_back, first
    second = by_node(data)["alpha"]
    # Not "up to date" while another run still could (and did) roll the node back: it waited
    # for that activation to settle, then deployed the system itself.
    assert second["result"] == "ok", second
    assert result.ok, out(result)
    assert "waiting for it to settle" in result.stdout + result.stderr
    assert fleet.current("alpha") == v2 != v1
    assert fleet.profile("alpha") == v2


def test_a_boot_entry_that_cannot_be_written_on_confirmation_rolls_everything_back(
    hosts: HostPool, tmp_path: Path
) -> None:
    # The switch itself goes well (it runs as `test`); making it the boot default after the
    # confirmation fails: the node must not run one system while it would boot another.
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")
    fleet.write({"alpha": {"vars": {"version": "2", "fail": {"boot": True}}}})
    result, data = fleet.apply("switch")
    assert not result.ok
    node = by_node(data)["alpha"]
    assert node["result"] == "rolled back", node
    assert node["rollback_reason"] == "making the confirmed system the boot default failed (exit 1)"
    assert "nixherd: switch-to-configuration boot" in node["error"]["output"]
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    assert boot_default(hosts.lab, a) == v1
    links = hosts.lab.ssh(a, "ls", "/nix/var/nix/profiles").stdout.split()
    assert sorted(x for x in links if x.startswith("system-")) == ["system-1-link"]


def test_activation_timeout_kills_the_whole_activation_before_rolling_back(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")
    fleet.write({"alpha": {"vars": {"version": "2", "fail": {"hang": True}}}})
    result, data = fleet.apply("push")
    assert result.ok, out(result)
    v2 = by_node(data)["alpha"]["store_path"]

    lines: list[str] = []

    def collect(event: Event) -> None:
        if isinstance(event, LogLine):
            lines.append(event.line)

    options = ActivationOptions(Goal.SWITCH, "alpha", confirm_timeout=5, timeout=3)
    with Connection(target_of(hosts, a)) as conn, pytest.raises(ActivationError) as info:
        activate(conn, v2, options, emit=collect)
    assert info.value.rolled_back, info.value.render()
    assert info.value.reason == "activation timed out"
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1

    supervisor = hosts.lab.status(a).pid
    assert supervisor is not None

    def hung() -> list[str]:
        found = []
        for pid in descendants(supervisor):
            argv = cmdline(pid)
            if any(v2 in word for word in argv) or argv[:2] == ["sleep", "3600"]:
                found.append(" ".join(argv))
        return found

    # Gone by the time the rollback is reported: not merely signalled.
    assert hung() == [], "\n".join(lines)


@pytest.mark.parametrize(
    "setup",
    [
        "ln -s /run/evil /run/nixherd",
        "mkdir /run/nixherd && chown deploy /run/nixherd",
        "mkdir -m 1777 /run/nixherd",
    ],
    ids=["symlink", "owned-by-deploy", "world-writable"],
)
def test_watchdog_refuses_a_state_dir_another_user_controls(
    hosts: HostPool, tmp_path: Path, setup: str
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")
    # (The first deploy made /run/nixherd; this one is made by someone else.)
    hosts.lab.sh(
        a, f"rm -rf /run/nixherd && mkdir -m 755 /run/evil && chown deploy /run/evil && {setup}"
    )
    fleet.write({"alpha": {"vars": {"version": "2"}}})
    result, data = fleet.apply("switch")
    assert not result.ok
    node = by_node(data)["alpha"]
    assert node["result"] == "failed"
    assert "/run/nixherd" in node["error"]["message"], node
    # Nothing written through it, nothing changed on the node.
    assert hosts.lab.sh(a, "ls -A /run/evil").stdout == ""
    assert hosts.lab.sh(a, "ls -A /run/nixherd/ 2>/dev/null; true").stdout == ""
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1

    # Once root removes it, the watchdog makes its own, for root alone.
    hosts.lab.sh(a, "rm -rf /run/nixherd /run/evil")
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    assert hosts.lab.ssh(a, "stat", "-c", "%U %a", "/run/nixherd").stdout.split() == ["root", "700"]


def ignore(_event: Event) -> None:
    pass
