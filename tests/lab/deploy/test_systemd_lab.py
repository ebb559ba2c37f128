"""Deploying to lab hosts whose pid 1 is systemd: the activation runs in a transient unit of its
own and the switch in a scope, a `unit` health check asks systemd, and a unit that fails in the
switch (exit 4) rolls the node back, or without rollback fails it on the new system.
Runs `nixherd` as a process."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rtoml
from deploykit import Fleet, by_node, free_port, make_fleet
from labkit import LabFactory, LabHosts

from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]


@pytest.fixture(scope="module")
def systemd_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(2, fresh=True)


@pytest.fixture
def fleet(tmp_path: Path, systemd_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", systemd_lab)


def explain(result: Result, report: dict[str, Any] | None = None) -> str:
    errors = {n["node"]: n["error"] for n in (report or {}).get("nodes", []) if n.get("error")}
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}\n{json.dumps(errors)}"


def test_lab_hosts_run_systemd(fleet: Fleet) -> None:
    said = fleet.lab.sh("lab-1", "cat /proc/1/comm; systemctl is-system-running || true").stdout
    assert said.split()[0] == "systemd", said


def test_activation_runs_in_a_transient_unit_and_the_switch_in_a_scope(fleet: Fleet) -> None:
    # The lab's service is a unit of the system (app.service), started by the switch through
    # systemd: it lives in its own cgroup, not in the switch's scope.
    record = "cat /proc/self/cgroup >/run/lab/service-cgroup; exec sleep 100000"
    fleet.write(["lab-1"], config={"lab-1": {"lab": {"service": {"command": record}}}})
    result, report = fleet.apply("switch")
    assert result.returncode == 0, explain(result, report)
    journal = fleet.lab.sh(
        "lab-1", "journalctl --no-pager -o cat -u 'nixherd-activate-*' -u 'nixherd-switch-*'"
    ).stdout
    ids = {
        line.split("nixherd activation ")[1].strip(".")
        for line in journal.splitlines()
        if line.startswith("Started nixherd-activate-") and "nixherd activation " in line
    }
    assert ids, journal
    # Under magic rollback the switch is tried (`test`), then made the boot default (`boot`),
    # each in a scope named after the activation.
    for action in ("test", "boot"):
        assert any(
            line.startswith("Started nixherd-switch-")
            and f"nixherd switch-to-configuration {action} (" in line
            for line in journal.splitlines()
        ), journal
    cgroup = fleet.lab.ssh("lab-1", "cat", "/run/lab/service-cgroup").stdout
    assert "0::/system.slice/app.service\n" in cgroup, cgroup
    assert "nixherd-switch-" not in cgroup, cgroup
    # Nothing of the activation is left once it settled (--collect): no unit stays loaded.
    units = fleet.lab.sh(
        "lab-1", "systemctl list-units --all --no-legend 'nixherd-activate-*' | wc -l"
    ).stdout
    assert units.strip() == "0", units


def check_health(fleet: Fleet, name: str, unit: str) -> Result:
    data = rtoml.loads(fleet.inventory.read_text())
    data["nodes"][name]["checks"] = {"app": {"unit": unit, "retries": 0}}
    fleet.inventory.write_text(rtoml.dumps(data))
    return fleet.nixherd("check-health")


def test_unit_check_asks_systemd(fleet: Fleet) -> None:
    fleet.write(["lab-2"])
    tag = secrets.token_hex(4)
    good, bad = f"nh-good-{tag}", f"nh-bad-{tag}"
    fleet.lab.ssh("lab-2", "systemd-run", f"--unit={good}", "--quiet", "sleep", "600")
    try:
        result = check_health(fleet, "lab-2", f"{good}.service")
        assert result.returncode == 0, explain(result)
        assert f"{good}.service: active" in result.stdout + result.stderr, explain(result)

        # A unit whose command exits 1 is failed (kept loaded: no --collect).
        fleet.lab.ssh("lab-2", "systemd-run", f"--unit={bad}", "--quiet", "sh", "-c", "exit 1")
        result = check_health(fleet, "lab-2", f"{bad}.service")
        assert result.returncode == 1, explain(result)
        assert f"{bad}.service: failed (exit 3)" in result.stdout + result.stderr, explain(result)
    finally:
        fleet.lab.ssh("lab-2", "systemctl", "stop", f"{good}.service", check=False)
        fleet.lab.ssh("lab-2", "systemctl", "reset-failed", f"{bad}.service", check=False)
    # Stopped now: inactive is no health either; nor is a unit the node never had.
    result = check_health(fleet, "lab-2", f"{good}.service")
    assert result.returncode == 1, explain(result)
    assert f"{good}.service: inactive (exit 3)" in result.stdout + result.stderr, explain(result)
    result = check_health(fleet, "lab-2", f"nh-never-{tag}.service")
    assert result.returncode == 1, explain(result)
    # Newer systemctl says "not found" by its exit code (4); Debian 12's 252 says inactive (3).
    said = result.stdout + result.stderr
    assert "no such unit on the node" in said or "service: inactive (exit 3)" in said, said


def failing_service(fleet: Fleet, name: str) -> None:
    """The next deploy's service exits at once: the switch goes through, then exits 4."""
    port = free_port()
    fleet.write([name], config={name: {"lab": {"service": {"command": "exit 1", "port": port}}}})


def test_a_unit_failing_in_the_switch_rolls_the_node_back(fleet: Fleet) -> None:
    fleet.write(["lab-1"])
    result, report = fleet.apply("switch")
    assert result.returncode == 0, explain(result, report)
    before = fleet.current("lab-1")
    failing_service(fleet, "lab-1")
    result, report = fleet.apply("switch")
    assert result.returncode == 1, explain(result, report)
    node = by_node(report)["lab-1"]
    assert node["result"] == "rolled back", explain(result, report)
    assert "the switch happened but a unit failed (exit 4)" in node["error"]["message"]
    assert fleet.current("lab-1") == before
    assert fleet.profile("lab-1") == before


def test_a_unit_failing_without_rollback_fails_the_node_on_its_new_system(fleet: Fleet) -> None:
    failing_service(fleet, "lab-2")
    result, report = fleet.apply("switch", "--no-rollback")
    assert result.returncode == 1, explain(result, report)
    node = by_node(report)["lab-2"]
    assert node["result"] == "failed", explain(result, report)
    message = node["error"]["message"]
    assert "the switch happened but a unit failed (exit 4)" in message
    assert "the node keeps the new system" in message
    assert fleet.current("lab-2") == node["store_path"] == fleet.profile("lab-2")
