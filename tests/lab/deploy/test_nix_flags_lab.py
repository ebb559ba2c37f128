"""Nix flags on a deploy to a real lab host: `apply --show-trace` of a fleet with a typo shows
Nix's trace and file positions, and the host is not touched; a good fleet deploys with the flags.
Runs `nixherd` as a process, as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploykit import Fleet, make_fleet
from labkit import LabFactory

pytestmark = [pytest.mark.lab, pytest.mark.nix]

# The typo: `http_prot` for `http_port`, on line 1, column 49 of service.nix.
TYPO = "{ node, ... }: { lab.service.port = node.vars.http_prot; }\n"


@pytest.fixture
def fleet(tmp_path: Path, lab_hosts: LabFactory, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    monkeypatch.setenv("NIX_CONFIG", "substituters =")
    return make_fleet(tmp_path / "fleet", lab_hosts(1))


def test_apply_show_trace_on_a_broken_fleet_shows_the_trace(fleet: Fleet) -> None:
    before = fleet.current("lab-1")
    (fleet.dir / "service.nix").write_text(TYPO)
    fleet.write(["lab-1"], service=["lab-1"])
    result, report = fleet.apply("switch", "--show-trace")
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert "attribute 'http_prot' missing" in err
    assert "service.nix:1:" in err
    assert "while evaluating" in err  # the trace
    assert "nixherd/lib.nix:" in err  # its frames name their files
    (node,) = report["nodes"]
    assert node["result"] == "failed"
    assert "service.nix:1:" in node["error"]["message"]
    assert fleet.current("lab-1") == before  # evaluation failed: the host was not touched

    # Without the flag: the position and Nix's hint, no trace.
    result, _ = fleet.apply("switch")
    assert result.returncode == 1
    assert "service.nix:1:" in result.stderr
    assert "use '--show-trace'" in result.stderr
    assert "while evaluating" not in result.stderr


def test_apply_with_nix_flags_deploys(fleet: Fleet) -> None:
    fleet.write(["lab-1"])
    result, report = fleet.apply(
        "switch",
        "--show-trace",
        "-L",
        "--option",
        "cores",
        "1",
        "--max-jobs",
        "2",
        "--builders",
        "",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (node,) = report["nodes"]
    assert node["result"] == "ok"
    assert fleet.current("lab-1") == node["store_path"]
