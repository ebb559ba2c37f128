"""Bounded evaluation on real lab hosts: `apply --eval-workers N --eval-node-limit K` deploys
nodes whose evaluation costs memory (lab.evalCost), each evaluated in a process of at most K
nodes; a node that does not evaluate fails alone; the report says what the evaluation cost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploykit import Fleet, by_node, make_fleet
from labkit import LabFactory, LabHosts

pytestmark = [pytest.mark.lab, pytest.mark.nix]

MIB = 1 << 20


@pytest.fixture(scope="module")
def eval_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(3)


@pytest.fixture
def fleet(tmp_path: Path, eval_lab: LabHosts) -> Fleet:
    return make_fleet(tmp_path / "fleet", eval_lab)


def test_apply_with_bounded_workers(fleet: Fleet) -> None:
    names = ["lab-1", "lab-2", "lab-3"]
    cost = {"lab": {"evalCost": {"megabytes": 48}}}
    broken = {"lab": {"version": "not a version"}}  # the lab's check throws: lab-3 only
    fleet.write(names, config={"lab-1": cost, "lab-2": cost, "lab-3": broken})
    result, report = fleet.apply(
        "switch", "--eval-workers", "2", "--eval-node-limit", "1", "--parallel", "0"
    )
    assert result.returncode == 1, result.stderr
    nodes = by_node(report)
    for name in ("lab-1", "lab-2"):
        assert nodes[name]["result"] == "ok", nodes[name]
        assert fleet.current(name) == nodes[name]["store_path"]
        assert {"eval", "build", "copy", "activate"} <= set(nodes[name]["seconds"])
    assert nodes["lab-3"]["result"] == "failed"
    assert "lab.version may hold only" in nodes["lab-3"]["error"]["message"]
    assert fleet.current("lab-3") != nodes["lab-3"]["store_path"]
    evaluation = report["evaluation"]
    assert (evaluation["workers"], evaluation["node_limit"]) == (2, 1)
    # One process per node, and one more to show lab-3's caught error in Nix's words.
    assert evaluation["processes"] == 4
    # A process held one node's 48 MiB (plus Nix's own ~25 MiB and the string's copy while it
    # is built, ~125 MiB measured), never two nodes' (~175 MiB).
    peak = evaluation["peak_rss_bytes"]
    assert 48 * MIB <= peak < 3 * 48 * MIB, peak / MIB
    assert evaluation["peak_rss_bound_bytes"] == 2 * evaluation["peak_rss_bytes"]
    assert report["options"]["eval_workers"] == 2
