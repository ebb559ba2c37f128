"""`nixherd report REPORT.json --html FILE`: the deploy timeline, read back as a DOM (Python's
parser) and as Chromium renders it (headless: its DOM and a screenshot)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import browserkit
import pytest

from nixherd.cli import jsonout, main, timeline
from nixherd.events import Outcome, Stage
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport, Span

EVIL = '<script>document.title="pwned"</script>'
EVIL_NODE = f"{EVIL}<b>web-2"


def run_report() -> RunReport:
    now = time.time()
    deploy = (
        Span(Stage.EVAL, 0.0, 1.0),
        Span(Stage.BUILD, 1.0, 2.0),
        Span(Stage.PROBE, 1.2, 0.1),
        Span(Stage.COPY, 3.0, 1.0),
        Span(Stage.ACTIVATE, 4.0, 1.0),
        Span(Stage.CHECK, 5.0, 0.5),
        Span(Stage.CONFIRM, 5.5, 0.3),
    )
    nodes = (
        NodeResult("web-1", Outcome.OK, stages={"copy": 1.0}, detail="switched"),
        NodeResult(
            EVIL_NODE,
            Outcome.FAILED,
            error=ErrorInfo(
                f"{EVIL} activation failed",
                command="ssh root@web-2 -- switch",
                returncode=1,
                output='<img src=x onerror="document.title=1">\nlast & final line',
            ),
        ),
        NodeResult(
            "db",
            Outcome.ROLLED_BACK,
            error=ErrorInfo("no confirmation within the timeout; rolled back to /nix/store/x"),
            rolled_back=True,
            rollback_reason="no confirmation within the timeout",
        ),
    )
    spans = {"web-1": deploy, EVIL_NODE: deploy[:5], "db": deploy[:6]}
    return RunReport("apply", "switch", "path:/srv", now - 6.0, now, nodes, spans=spans)


def write_report(path: Path, data: Any = None, command: str = "apply") -> Path:
    if data is None:
        data = run_report().to_data()
    path.write_text(json.dumps(jsonout.envelope(command, data)))
    return path


def draw(tmp_path: Path, data: Any = None) -> str:
    report = write_report(tmp_path / "report.json", data)
    out = tmp_path / "timeline.html"
    assert main(["report", str(report), "--html", str(out)]) == 0
    return out.read_text()


def rows(dom: browserkit.Dom) -> list[browserkit.Element]:
    return dom.with_class("node")


def test_a_row_per_node_with_its_stages_on_the_run_clock(tmp_path: Path) -> None:
    dom = browserkit.parse(draw(tmp_path))
    assert [r.attrs["data-node"] for r in rows(dom)] == ["web-1", EVIL_NODE, "db"]
    bars = dom.with_class("bar")
    stages = [b.attrs["data-stage"] for b in bars]
    assert stages[:7] == ["eval", "build", "probe", "copy", "activate", "check", "confirm"]
    assert len(bars) == 7 + 5 + 6
    # The run took 6 s: activate starts at 4 s, two thirds of the way, and lasts a sixth.
    activate = bars[4].attrs["style"]
    assert "left:66.667%" in activate and "width:16.667%" in activate
    # The probe ran during the build: drawn beneath it, not over it.
    assert [("under" in b.attrs["class"].split()) for b in bars[:4]] == [False, False, True, False]
    results = [e.text for e in dom.with_class("result")][1:]  # after the axis' empty cell
    assert results == ["ok", "failed", "rolled back"]


def test_markup_in_node_names_and_errors_is_shown_as_text(tmp_path: Path) -> None:
    page = draw(tmp_path)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    dom = browserkit.parse(page)
    assert dom.tags("script") == [] and dom.tags("img") == []
    names = [e.text for e in dom.with_class("name")]
    assert EVIL_NODE in names
    error = next(e.text for e in dom.tags("pre"))
    assert error.startswith(f"{EVIL} activation failed\ncommand: ssh root@web-2 -- switch\n")
    assert error.endswith('<img src=x onerror="document.title=1">\nlast & final line')


def test_a_report_without_start_times_lays_the_stages_end_to_end(tmp_path: Path) -> None:
    # A report from before `spans`: each node's `seconds`, eval and build from the run's.
    data = run_report().to_data()
    data["run_seconds"] = {"eval": 1.0, "build": 2.0}
    for node in data["nodes"]:
        del node["spans"]  # type: ignore[misc]
    data["nodes"][0]["seconds"] = {"copy": 1.0, "eval": 1.0, "build": 2.0, "activate": 0.5}
    dom = browserkit.parse(draw(tmp_path, data))
    first = [(b.attrs["data-stage"], b.attrs["style"].split(";")[0]) for b in dom.with_class("bar")]
    assert first == [
        ("eval", "left:0.000%"),
        ("build", "left:16.667%"),
        ("copy", "left:50.000%"),
        ("activate", "left:66.667%"),
    ]
    assert len(dom.with_class("approx")) == 3


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read the report"),
        ("{not json", "not JSON"),
        ('{"schema": "nixherd/v0", "command": "apply", "data": {}}', "schema: expected"),
        ('{"schema": "nixherd/v1", "command": "status", "data": {}}', "command: 'status'"),
        ('{"schema": "nixherd/v1", "command": "apply", "data": {}}', "data.nodes: must be"),
        (
            '{"schema": "nixherd/v1", "command": "apply", "data": {"nodes": [{"result": "ok"}]}}',
            "data.nodes[0].node: must be a string",
        ),
        (
            '{"schema": "nixherd/v1", "command": "apply", "data": {"nodes": [{"node": "a", '
            '"result": "ok", "spans": [{"stage": "copy", "start": -1, "seconds": 1}]}]}}',
            "data.nodes[0].spans[0].start: must be a finite number >= 0",
        ),
    ],
)
def test_bad_report_is_exit_2_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, said: str
) -> None:
    report = tmp_path / "r.json"
    if content is not None:
        report.write_text(content)
    out = tmp_path / "t.html"
    assert main(["report", str(report), "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nixherd: error: {report}: "), err
    assert said in err and "Traceback" not in err
    assert not out.exists()


def test_apply_dry_run_refuses_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[nodes.a]\nhost = "192.0.2.1"\n')
    code = main(["-i", str(inventory), "apply", "--dry-run", "--html", str(tmp_path / "t.html")])
    assert code == 2
    assert "--html" in capsys.readouterr().err


def test_chromium_renders_a_row_per_node_and_markup_as_text(tmp_path: Path) -> None:
    draw(tmp_path)
    page = tmp_path / "timeline.html"
    dom = browserkit.parse(browserkit.dump_dom(page))
    # The DOM Chromium built: one row per node, no element made of a node's name or error.
    assert [r.attrs["data-node"] for r in rows(dom)] == ["web-1", EVIL_NODE, "db"]
    assert dom.tags("script") == [] and dom.tags("img") == []
    assert EVIL_NODE in [e.text for e in dom.with_class("name")]
    title = dom.tags("title")[0].text
    assert title == "nixherd apply switch"  # the injected script did not run
    png = browserkit.screenshot(page, tmp_path / "shot.png")
    # Drawn, not blank: text, the legend's and the bars' colours.
    assert browserkit.png_colours(png) > 20


def test_the_timeline_module_reads_what_the_report_writes() -> None:
    drawn = timeline.from_data("apply", run_report().to_data(), source="x")
    assert [r.node for r in drawn.rows] == ["web-1", EVIL_NODE, "db"]
    assert drawn.rows[2].note.startswith("no confirmation within the timeout")
    assert all(r.placed for r in drawn.rows)
