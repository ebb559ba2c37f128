"""The deploy timeline of a real deploy on lab hosts: `apply --html FILE` (one node switches,
one rolls back) and `report REPORT.json --html FILE`, both rendered by headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import browserkit
import pytest
from safetykit import HostPool, by_node, deployed_pair, host_pool, out

pytestmark = [pytest.mark.lab, pytest.mark.nix]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPool]:
    yield from host_pool(tmp_path_factory, "timeline-lab", 4)


def drawn_rows(page: Path) -> dict[str, list[str]]:
    """Node -> the stages of its bars, from the DOM Chromium built of the page."""
    dom = browserkit.parse(browserkit.dump_dom(page))
    assert dom.tags("script") == []
    rows: dict[str, list[str]] = {}
    for row in dom.with_class("node"):
        rows[row.attrs["data-node"]] = []
    # Bars follow their row in document order.
    current = None
    for element in dom.elements:
        if "node" in element.attrs.get("class", "").split():
            current = element.attrs["data-node"]
        elif "bar" in element.attrs.get("class", "").split() and current is not None:
            rows[current].append(element.attrs["data-stage"])
    return rows


def test_apply_html_draws_the_real_deploy(hosts: HostPool, tmp_path: Path) -> None:
    fleet = deployed_pair(hosts, tmp_path)
    fleet.write(
        {
            "alpha": {"vars": {"version": "2", "fail": {"activation": True}}},
            "bravo": {"vars": {"version": "2"}},
        }
    )
    page = tmp_path / "timeline.html"
    result, data = fleet.apply("switch", "--confirm-timeout", "60", "--html", str(page))
    assert not result.ok
    nodes = by_node(data)
    assert nodes["alpha"]["result"] == "rolled back"
    assert nodes["bravo"]["result"] == "ok", out(result)

    rows = drawn_rows(page)
    assert list(rows) == ["alpha", "bravo"]
    # Every stage the report timed is drawn, in the order it started.
    for name, row in rows.items():
        assert row == [s["stage"] for s in nodes[name]["spans"]]
        assert set(row) == set(nodes[name]["seconds"])
    assert {"eval", "build", "copy", "activate", "confirm"} <= set(rows["bravo"])
    assert "confirm" not in rows["alpha"]
    text = page.read_text()
    # A lab system's failing activation makes switch-to-configuration exit 2, as NixOS's does.
    assert "activation failed (exit 2)" in text
    png = browserkit.screenshot(page, tmp_path / "shot.png")
    assert browserkit.png_colours(png) > 20

    # The same run drawn later from its report file: the same rows.
    report = tmp_path / "again.html"
    files = sorted(fleet.dir.glob("report-*.json"))
    drawn = fleet.nixherd("report", str(files[-1]), "--html", str(report))
    assert drawn.returncode == 0, out(drawn)
    assert drawn_rows(report) == rows
    assert json.loads(files[-1].read_text())["command"] == "apply"
