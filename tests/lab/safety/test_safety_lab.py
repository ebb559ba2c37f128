"""Safe deploys on real lab hosts, each test with a real fault: an activation that cuts ssh off,
a failing health check, a failing activation, two deploys at once, a copy killed midway; and
`diff`, `rollback`, `check-health` against what the hosts really run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest
from labkit import http_get
from safetykit import (
    HostPool,
    apply_running,
    by_node,
    cmdline,
    deployed_pair,
    deployed_single,
    descendants,
    host_pool,
    make_fleet,
    out,
    wait_for,
)

from nixherd.events import Event
from nixherd.node.activation import ActivationOptions, activate
from nixherd.node.checks import CheckKind, HealthCheck
from nixherd.node.goal import Goal
from nixherd.run.ssh import Connection, Target

pytestmark = [pytest.mark.lab, pytest.mark.nix]

# Ports for every host this module may hand out.
POOL_PORTS = 32


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    """This module's own lab: each test gets hosts no other test touched (a fault such as a
    frozen sshd must not leak), all stopped by recorded pid when the module ends."""
    yield from host_pool(tmp_path_factory, "safety-lab", POOL_PORTS)


def ignore(_event: Event) -> None:
    pass


def test_activation_that_cuts_ssh_is_rolled_back_within_the_timeout(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet = deployed_pair(hosts, tmp_path)
    v1 = fleet.current("alpha")
    assert v1 is not None and v1.endswith("-alpha-1")

    fleet.write(
        {
            "alpha": {"vars": {"version": "2", "fail": {"cutSsh": True}}},
            "bravo": {"vars": {"version": "2"}},
        }
    )
    confirm_timeout = 5.0
    outcome: dict[str, Any] = {}

    def deploy() -> None:
        outcome["result"], outcome["report"] = fleet.apply(
            "switch", "--confirm-timeout", str(confirm_timeout)
        )

    thread = threading.Thread(target=deploy)
    thread.start()
    # Watch the host through its pid 1's root: no ssh, which the fault freezes.
    timeline: list[tuple[float, str | None]] = []
    while thread.is_alive():
        now = fleet.current("alpha")
        if not timeline or timeline[-1][1] != now:
            timeline.append((time.monotonic(), now))
        time.sleep(0.05)
    thread.join()

    switched = next(t for t, path in timeline if path and path.endswith("-alpha-2"))
    back = next(t for t, path in timeline if t > switched and path == v1)
    assert back - switched <= confirm_timeout + 10
    report = by_node(outcome["report"])
    assert not outcome["result"].ok
    assert report["alpha"]["result"] == "rolled back"
    assert report["alpha"]["rolled_back"] is True
    assert "no confirmation within the timeout" in report["alpha"]["rollback_reason"]
    # The fresh login of the confirmation failed, the open connection did not: the node's sshd
    # stopped answering, and the report says so rather than suspecting the deployer.
    reason = report["alpha"]["rollback_reason"]
    assert "stopped answering new ssh logins" in reason, out(outcome["result"])
    assert "cut off" not in report["alpha"]["error"]["message"]
    assert report["bravo"]["result"] == "ok"
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    bravo = fleet.current("bravo")
    assert bravo is not None and bravo.endswith("-bravo-2")

    # The rollback thawed sshd and released the lock: the next deploy goes through.
    fleet.write({"alpha": {"vars": {"version": "3"}}, "bravo": {"vars": {"version": "2"}}})
    result, _ = fleet.apply("switch", "--on", "alpha")
    assert result.ok, out(result)
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-3")


def test_failing_health_check_rolls_back_and_passing_one_confirms(
    hosts: HostPool, tmp_path: Path
) -> None:
    a, b = hosts.take(2)
    fleet = make_fleet(tmp_path, hosts.lab, {"alpha": a, "bravo": b})
    pa, pb = fleet.port("alpha"), fleet.port("bravo")

    def node(name: str, port: int, version: str, service: dict[str, Any]) -> dict[str, Any]:
        check = {
            "http": f"http://{{host}}:{port}/health",
            "body": f'"node": "{name}"',
            "timeout": 1,
            "retries": 2,
            "interval": 0.5,
        }
        return {"vars": {"version": version, "service": service}, "checks": {"web": check}}

    fleet.write(
        {
            "alpha": node("alpha", pa, "1", {"port": pa}),
            "bravo": node("bravo", pb, "1", {"port": pb}),
        }
    )
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    v1 = fleet.current("alpha")

    # alpha's new service does not answer; bravo's does.
    fleet.write(
        {
            "alpha": node("alpha", pa, "2", {"command": "exec sleep 100000"}),
            "bravo": node("bravo", pb, "2", {"port": pb}),
        }
    )
    result, data = fleet.apply("switch")
    assert not result.ok
    report = by_node(data)
    assert report["alpha"]["result"] == "rolled back"
    assert "health check failed" in report["alpha"]["rollback_reason"]
    assert report["bravo"]["result"] == "ok"
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    bravo = fleet.current("bravo")
    assert bravo is not None and bravo.endswith("-bravo-2")
    # The previous system's service runs again.
    status, body = http_get(pa)
    assert status == 200 and json.loads(body)["version"] == "1"

    # check-health on demand: both healthy now.
    health = fleet.nixherd("check-health", "--json")
    assert health.returncode == 0, out(health)
    checked = jsonkit.document(health.stdout, "check-health")
    assert {n["node"]: n["result"] for n in checked["nodes"]} == {
        "alpha": "ok",
        "bravo": "ok",
    }
    # ... and a check that cannot pass is reported, with exit code 1.
    fleet.write(
        {
            "alpha": node("alpha", pa, "1", {"port": pa}),
            "bravo": node("bravo", pb, "2", {"port": pb})
            | {"checks": {"web": {"tcp": f"{{host}}:{fleet.port('nothing')}", "retries": 0}}},
        }
    )
    health = fleet.nixherd("check-health", "--json")
    assert health.returncode == 1
    nodes = by_node(jsonkit.document(health.stdout, "check-health"))
    assert nodes["alpha"]["result"] == "ok"
    assert nodes["bravo"]["result"] == "failed"
    assert "0/1 checks passed" in nodes["bravo"]["error"]["message"]


def test_failed_activation_restores_the_previous_system_and_spares_the_others(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet = deployed_pair(hosts, tmp_path)
    v1 = fleet.current("alpha")

    fleet.write(
        {
            "alpha": {"vars": {"version": "2", "fail": {"activation": True}}},
            "bravo": {"vars": {"version": "2"}},
        }
    )
    result, data = fleet.apply("switch", "--confirm-timeout", "60")
    assert not result.ok
    report = by_node(data)
    alpha = report["alpha"]
    assert alpha["result"] == "rolled back"
    # switch-to-configuration exits 2 when the activation script failed (NixOS, docs/lab.md).
    assert alpha["rollback_reason"] == "activation failed (exit 2)"
    # Rolled back at once, not after the confirm timeout.
    assert alpha["seconds"]["activate"] < 30
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    assert report["bravo"]["result"] == "ok"
    bravo = fleet.current("bravo")
    assert bravo is not None and bravo.endswith("-bravo-2")
    # The failed generation is gone from the profile: a later `rollback` cannot land on it.
    links = hosts.lab.ssh(fleet.hosts["alpha"], "ls", "/nix/var/nix/profiles").stdout.split()
    assert sorted(x for x in links if x.startswith("system-")) == ["system-1-link"]


def test_two_deploys_at_once_one_fails_fast_and_the_node_stays_consistent(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    fleet.write({"alpha": {"vars": {"version": "2"}}})
    result, data = fleet.apply("push")
    assert result.ok, out(result)
    v2 = by_node(data)["alpha"]["store_path"]

    # The first deploy holds the node while its (slow) health check runs.
    target = Target(
        node="alpha", host="127.0.0.1", port=hosts.lab.port(a), ssh_config=hosts.lab.ssh_config
    )
    slow = HealthCheck("slow", CheckKind.COMMAND, command=("sleep", "10"), timeout=20, retries=0)
    first: dict[str, Any] = {}

    def deploy_first() -> None:
        with Connection(target) as conn:
            first["result"] = activate(
                conn, v2, ActivationOptions(Goal.SWITCH, "alpha"), checks=[slow], emit=ignore
            )

    thread = threading.Thread(target=deploy_first)
    thread.start()
    try:
        wait_for(
            lambda: hosts.lab.ssh(a, "readlink", "/run/nixherd/lock", check=False).ok,
            timeout=30,
            what="the first deploy's lock",
        )
        fleet.write({"alpha": {"vars": {"version": "3"}}})
        result, data = fleet.apply("switch")
    finally:
        thread.join()
    assert not result.ok
    second = by_node(data)["alpha"]
    assert second["result"] == "failed"
    assert "another deploy holds the lock since" in second["error"]["message"]
    assert second["seconds"]["activate"] < 3
    assert first["result"].status == "confirmed"
    assert fleet.current("alpha") == v2
    assert fleet.profile("alpha") == v2

    # The lock went with the first deploy: the second one now goes through.
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-3")


def test_connection_killed_during_the_copy_fails_cleanly_and_the_next_deploy_works(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet, a = deployed_single(hosts, tmp_path)
    v1 = fleet.current("alpha")

    # A closure big enough for the copy to take a while.
    fleet.write({"alpha": {"vars": {"version": "2", "payload": {"nodeMB": 300}}}})
    with apply_running(fleet) as (deployer, report_file):

        def copy_connection() -> int | None:
            # The ssh that `nix copy` (started by our nixherd) runs to reach the node's store.
            for pid in descendants(deployer.pid):
                argv = cmdline(pid)
                if argv[:1] == ["nix"] and "copy" in argv:
                    ssh = [c for c in descendants(pid) if cmdline(c)[:1] == ["ssh"]]
                    return ssh[0] if ssh else None
            return None

        victim = wait_for(copy_connection, timeout=120, what="nix copy's ssh")
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        assert deployer.wait(timeout=300) == 1
    node = by_node(jsonkit.document(report_file.read_text(), "apply"))["alpha"]
    assert node["result"] == "failed"
    assert " copy --to ssh://" in (node["error"]["command"] or "")
    assert "activate" not in node["seconds"]
    assert fleet.current("alpha") == v1
    assert not hosts.lab.ssh(a, "test", "-e", "/run/nixherd/lock", check=False).ok

    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-2")


def test_diff_shows_the_real_difference_between_two_builds(hosts: HostPool, tmp_path: Path) -> None:
    fleet = deployed_pair(hosts, tmp_path)

    # alpha: version bumped and a payload added; bravo unchanged.
    fleet.write(
        {
            "alpha": {"vars": {"version": "2", "payload": {"nodeMB": 1}}},
            "bravo": {"vars": {"version": "1"}},
        }
    )
    diff = fleet.nixherd("diff", "--json")
    assert diff.returncode == 0, out(diff)
    data = {n["node"]: n["diff"] for n in jsonkit.document(diff.stdout, "diff")["nodes"]}
    alpha = data["alpha"]
    assert alpha["changed"] == {"nixos-system-alpha": {"before": ["1"], "after": ["2"]}}
    assert alpha["added"] == {"lab-payload-alpha": ["1M"]}
    assert alpha["removed"] == {}
    assert alpha["size_change"] >= 1024 * 1024
    assert alpha["before"] == fleet.current("alpha")
    assert data["bravo"]["identical"] is True

    text = fleet.nixherd("diff", "--on", "alpha")
    assert text.returncode == 0, out(text)
    assert "  ~ nixos-system-alpha: 1 -> 2\n" in text.stdout
    assert "  + lab-payload-alpha 1M\n" in text.stdout
    assert text.stdout.endswith("1 of 1 nodes change.\n")
    # diff touched nothing.
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-1")


def test_diff_reads_a_host_name_with_a_number_as_part_of_the_system_name(
    hosts: HostPool, tmp_path: Path
) -> None:
    # nixos-system-web-1-1 -> nixos-system-web-1-2: the system "nixos-system-web-1" moves from
    # 1 to 2 (read the way Nix splits names, it was "nixos-system-web" from "1-1" to "1-2").
    (host,) = hosts.take(1)
    fleet = make_fleet(tmp_path, hosts.lab, {"web-1": host})
    fleet.write({"web-1": {"vars": {"version": "1"}}})
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    fleet.write({"web-1": {"vars": {"version": "2"}}})
    diff = fleet.nixherd("diff", "--json")
    assert diff.returncode == 0, out(diff)
    (node,) = jsonkit.document(diff.stdout, "diff")["nodes"]
    assert node["diff"]["before"].endswith("-nixos-system-web-1-1")
    assert node["diff"]["changed"] == {"nixos-system-web-1": {"before": ["1"], "after": ["2"]}}
    assert node["diff"]["added"] == node["diff"]["removed"] == {}


def test_rollback_returns_each_node_to_its_previous_generation(
    hosts: HostPool, tmp_path: Path
) -> None:
    fleet = deployed_pair(hosts, tmp_path)
    v1 = fleet.current("alpha")
    fleet.write({"alpha": {"vars": {"version": "2"}}, "bravo": {"vars": {"version": "1"}}})
    result, _ = fleet.apply("switch", "--on", "alpha")
    assert result.ok, out(result)

    rollback = fleet.nixherd("rollback", "--json")
    assert rollback.returncode == 1, out(rollback)
    nodes = by_node(jsonkit.document(rollback.stdout, "rollback"))
    assert nodes["alpha"]["result"] == "ok"
    assert nodes["alpha"]["store_path"] == v1
    assert fleet.current("alpha") == v1
    assert fleet.profile("alpha") == v1
    # bravo has one generation only: nothing to go back to, and nothing touched.
    assert nodes["bravo"]["result"] == "failed"
    assert "no previous generation" in nodes["bravo"]["error"]["message"]
    bravo = fleet.current("bravo")
    assert bravo is not None and bravo.endswith("-bravo-1")


def test_non_root_user_activates_and_confirms_through_sudo(hosts: HostPool, tmp_path: Path) -> None:
    (a,) = hosts.take(1)
    fleet = make_fleet(tmp_path, hosts.lab, {"alpha": a})
    fleet.write({"alpha": {"user": "deploy", "vars": {"version": "1"}}})
    result, _ = fleet.apply("switch")
    assert result.ok, out(result)
    fleet.write(
        {"alpha": {"user": "deploy", "vars": {"version": "2", "fail": {"activation": True}}}}
    )
    result, data = fleet.apply("switch")
    assert by_node(data)["alpha"]["result"] == "rolled back", out(result)
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-1")
    # The watchdog's state is root's alone.
    mode = hosts.lab.ssh(a, "stat", "-c", "%U %a", "/run/nixherd").stdout.split()
    assert mode == ["root", "700"]


def test_settled_activations_leave_nothing_behind_on_the_node(
    hosts: HostPool, tmp_path: Path
) -> None:
    # Once an activation settles, the watchdog's timers (confirm window, activation timeout)
    # and the followers' tickers are gone with their sleeps, and no process on the node (the
    # service the switch started among them) holds one of the watchdog's FIFOs open.
    fleet = deployed_pair(hosts, tmp_path)
    supervisor = hosts.lab.status(fleet.hosts["alpha"]).pid
    assert supervisor is not None
    service = {"port": fleet.port("alpha")}

    def leftovers() -> list[str]:
        return node_leftovers(supervisor)

    for version, fail in (("2", {}), ("3", {"activation": True})):
        fleet.write(
            {
                "alpha": {"vars": {"version": version, "fail": fail, "service": service}},
                "bravo": {"vars": {"version": "1"}},
            }
        )
        fleet.apply("switch", "--on", "alpha", "--confirm-timeout", "60")
        try:
            wait_for(lambda: not leftovers(), timeout=3, what="nothing left on the node")
        except AssertionError:
            raise AssertionError(f"left on the node: {leftovers()}") from None
    now = fleet.current("alpha")
    assert now is not None and now.endswith("-alpha-2")
    assert http_get(service["port"], "/")[0] == 200


def node_leftovers(supervisor: int) -> list[str]:
    """Processes of the watchdog (or its timers) on a lab host, and FIFOs of it held open."""
    found = []
    for pid in descendants(supervisor):
        argv = cmdline(pid)
        if argv[:1] == ["sleep"] or any("watchdog.sh" in a for a in argv):
            found.append(" ".join(argv))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if "/run/nixherd" in target:
                        found.append(f"{' '.join(argv)} holds {target}")
    return found


def test_start_stream_cut_mid_switch_is_followed_again_and_confirmed(
    hosts: HostPool, tmp_path: Path
) -> None:
    # `start` streams the activation; kill that ssh while the switch runs (it waits 3 s for its
    # service): nixherd follows again with `wait` over the ControlMaster, from the log offset it
    # had, and confirms. The cut-off follower on the node ends by itself.
    fleet, a = deployed_single(hosts, tmp_path)
    port = fleet.port("alpha")
    slow = {"port": port, "command": "sleep 3; exec python3 -m http.server $PORT --bind 127.0.0.1"}
    fleet.write({"alpha": {"vars": {"version": "2", "service": slow}}})
    with apply_running(fleet, "-v") as (deployer, report_file):

        def start_stream() -> int | None:
            for pid in descendants(deployer.pid):
                argv = cmdline(pid)
                if argv[:1] == ["ssh"] and " start switch " in argv[-1]:
                    return pid
            return None

        victim = wait_for(start_stream, timeout=120, what="the ssh of `start`")
        # Until the switch is under way (the new system's service sleeps before listening).
        wait_for(
            lambda: (fleet.current("alpha") or "").endswith("-alpha-2"),
            timeout=60,
            what="the switch to begin",
        )
        os.kill(victim, signal.SIGKILL)
        assert deployer.wait(timeout=120) == 0, (fleet.dir / "apply.log").read_text()
    node = by_node(jsonkit.document(report_file.read_text(), "apply"))["alpha"]
    assert node["result"] == "ok"
    assert fleet.profile("alpha").endswith("-alpha-2")
    assert http_get(port, "/")[0] == 200
    # The log reached the deployer once: what `start` streamed is not repeated by `wait`.
    log = (fleet.dir / "apply.log").read_text()
    assert log.count("nixherd: switch-to-configuration test") == 1, log
    # The confirmation made it the boot default, its log streamed once too.
    assert log.count("nixherd: setting the system profile") == 1, log
    assert log.count("nixherd: switch-to-configuration boot") == 1, log
    supervisor = hosts.lab.status(a).pid
    assert supervisor is not None
    try:
        wait_for(lambda: not node_leftovers(supervisor), timeout=5, what="nothing left")
    except AssertionError:
        raise AssertionError(f"left on the node: {node_leftovers(supervisor)}") from None
