"""`apply --reboot` on real lab hosts: a node is up to date only when it BOOTED its system, keys
under /run go up again after the reboot, the health checks run on the rebooted node, and the
wait says what it waits for. Runs `nixherd` as a process, on hosts of its own (they reboot).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rtoml
from deploykit import Fleet, by_node, make_fleet
from labkit import LabFactory, LabHosts

from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]


@pytest.fixture(scope="module")
def reboot_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(2, fresh=True)


@pytest.fixture
def fleet(tmp_path: Path, reboot_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", reboot_lab)


def explain(result: Result, report: dict[str, Any]) -> str:
    errors = {n["node"]: n["error"] for n in report.get("nodes", []) if n.get("error")}
    return f"{result.stdout}\n{result.stderr}\n{json.dumps(errors, indent=1)}"


def booted(fleet: Fleet, name: str) -> str:
    """The system the host booted ("" when it booted none: a new host)."""
    return fleet.lab.ssh(name, "readlink", "/run/booted-system", check=False).stdout.strip()


def test_boot_then_boot_reboot_reboots_into_the_new_system(fleet: Fleet) -> None:
    fleet.write(["lab-1"])
    before = booted(fleet, "lab-1")
    result, report = fleet.apply("boot")
    assert result.returncode == 0, explain(result, report)
    wanted = by_node(report)["lab-1"]["store_path"]
    assert fleet.profile("lab-1") == wanted and booted(fleet, "lab-1") == before != wanted
    boots = fleet.lab.status("lab-1").boots
    assert boots is not None

    # The profile is already right: the node is not up to date until it booted that system,
    # and it needs a reboot only (nothing copied, nothing activated again).
    result, report = fleet.apply("boot", "--reboot", "--reboot-timeout", "60")
    assert result.returncode == 0, explain(result, report)
    node = by_node(report)["lab-1"]
    assert node["result"] == "ok", explain(result, report)
    assert "reboot" in node["seconds"]
    assert "activate" not in node["seconds"] and "copy" not in node["seconds"]
    assert fleet.lab.status("lab-1").boots == boots + 1
    assert booted(fleet, "lab-1") == wanted == fleet.current("lab-1")
    out = result.stdout + result.stderr
    assert "waiting for lab-1 to come back (boot " in out, out
    assert "up to 60 s)" in out, out

    # Booted on it now: up to date, no second reboot.
    result, report = fleet.apply("boot", "--reboot", "--reboot-timeout", "60")
    assert result.returncode == 0, explain(result, report)
    assert by_node(report)["lab-1"]["result"] == "up to date", explain(result, report)
    assert fleet.lab.status("lab-1").boots == boots + 1


def with_keys_and_check(fleet: Fleet, name: str) -> None:
    """Add to `name` a key of each phase under /run/keys and a check that needs the first key
    and leaves a mark under /run (tmpfs: a reboot forgets it), one line per run."""
    data = rtoml.loads(fleet.inventory.read_text())
    data["nodes"][name]["keys"] = {
        "pre": {"command": ["printf", "pre-secret"], "dest": "/run/keys/pre"},
        "post": {
            "command": ["printf", "post-secret"],
            "dest": "/run/keys/post",
            "upload": "post-activation",
        },
    }
    data["nodes"][name]["checks"] = {
        "keyed": {
            "command": ["sh", "-c", "test -s /run/keys/pre && echo ran >>/run/check-ran"],
            "retries": 0,
        }
    }
    fleet.inventory.write_text(rtoml.dumps(data))


def test_after_a_reboot_keys_go_up_again_and_checks_run(fleet: Fleet) -> None:
    fleet.write(["lab-2"])
    with_keys_and_check(fleet, "lab-2")
    boots = fleet.lab.status("lab-2").boots
    assert boots is not None
    result, report = fleet.apply("switch", "--reboot", "--reboot-timeout", "60")
    assert result.returncode == 0, explain(result, report)
    node = by_node(report)["lab-2"]
    assert node["result"] == "ok"
    assert fleet.lab.status("lab-2").boots == boots + 1
    assert fleet.current("lab-2") == node["store_path"]
    keys = fleet.lab.sh("lab-2", "cat /run/keys/pre; echo; cat /run/keys/post").stdout
    assert keys.split() == ["pre-secret", "post-secret"]
    # /run was emptied by the reboot: one mark means the check ran once, after it.
    assert fleet.lab.ssh("lab-2", "cat", "/run/check-ran").stdout.split() == ["ran"]
    out = result.stdout + result.stderr
    assert out.index("back up") < out.rindex("check keyed: ok"), out


def test_a_check_failing_after_the_reboot_fails_the_node(fleet: Fleet) -> None:
    fleet.write(["lab-2"])
    data = rtoml.loads(fleet.inventory.read_text())
    # Healthy while the deployer's mark is there (before the reboot), not after it.
    fleet.lab.ssh("lab-2", "touch", "/run/before-reboot")
    data["nodes"]["lab-2"]["checks"] = {
        "marked": {"command": ["test", "-e", "/run/before-reboot"], "retries": 0}
    }
    fleet.inventory.write_text(rtoml.dumps(data))
    result, report = fleet.apply("switch", "--reboot", "--reboot-timeout", "60")
    assert result.returncode == 1, explain(result, report)
    node = by_node(report)["lab-2"]
    assert node["result"] == "failed", explain(result, report)
    assert "after the reboot" in node["error"]["message"]
    assert "marked" in node["error"]["message"]
