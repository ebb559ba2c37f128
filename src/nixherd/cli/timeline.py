"""The deploy timeline: one self-contained HTML page drawn from a run report (docs/json.md).

A Gantt chart with a row per node: its stages (eval, build, probe, copy, keys, activate, check,
confirm, reboot, ...) placed on the run's clock from the report's `spans`, its result, and its
error whole. `nixherd report REPORT.json --html FILE` and `apply --html FILE` write it.

The page is static: inline CSS, no script, no external resource, and a Content-Security-Policy
that allows none, so it opens offline and a node name or an error text holding markup is shown
as text (every value is escaped where it enters the page; nothing is ever unescaped).

A report file is input: whatever is wrong in it is a UsageError naming the file and the key
(exit 2), never a traceback. Reports written before `spans` existed still draw: each node's
stages are then laid end to end from its `seconds` (the page says so).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nixherd.errors import UsageError

RUN_COMMANDS = ("build", "apply", "exec", "rollback", "check-health")
# The stages in the order of a deploy, each with its colour (the legend lists them so).
STAGE_COLOURS = {
    "eval": "#8e7cc3",
    "build": "#6d9eeb",
    "probe": "#a2c4c9",
    "copy": "#f6b26b",
    "keys": "#ffd966",
    "profile": "#b6d7a8",
    "activate": "#e06666",
    "check": "#93c47d",
    "confirm": "#45818e",
    "reboot": "#c27ba0",
    "data": "#d5a6bd",
    "exec": "#76a5af",
    "status": "#999999",
}
_OTHER_COLOUR = "#bbbbbb"
# Bars narrower than this (% of the run) are widened to it, so a 5 ms probe stays visible.
_MIN_WIDTH = 0.4


@dataclass(frozen=True, slots=True)
class Bar:
    stage: str
    start: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Row:
    node: str
    result: str
    bars: tuple[Bar, ...]
    placed: bool  # False: no start times in the report, stages laid end to end
    note: str  # the detail or the error's first line
    error: str | None  # the error whole: message, command, last output lines


@dataclass(frozen=True, slots=True)
class Timeline:
    command: str
    goal: str | None
    flake: str | None
    started_at: str
    seconds: float
    counts: Mapping[str, int]
    interrupted: bool
    rows: tuple[Row, ...]


# --- reading a report ---


def load(path: str) -> Timeline:
    """The timeline of the run report in the file `path` (`apply --report`'s JSON document)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the report: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from exc
    return from_document(document, source=path)


def from_document(document: object, *, source: str) -> Timeline:
    """The timeline of a run report's envelope ({"schema", "command", "data"})."""
    from nixherd.cli.jsonout import SCHEMA

    top = _mapping(document, source, "")
    schema = top.get("schema")
    if schema != SCHEMA:
        raise UsageError(f"{source}: schema: expected {SCHEMA!r}, got {schema!r}")
    command = _text(top, "command", source, "")
    if command not in RUN_COMMANDS:
        raise UsageError(
            f"{source}: command: {command!r} writes no run report "
            f"(one of: {', '.join(RUN_COMMANDS)})"
        )
    return from_data(command, top.get("data"), source=source, where="data")


def from_data(command: str, data: object, *, source: str, where: str = "") -> Timeline:
    """The timeline of a run report's data (RunReport.to_data(), or read from a file)."""
    report = _mapping(data, source, where)
    nodes = report.get("nodes")
    if not isinstance(nodes, list):
        raise UsageError(f"{source}: {_key(where, 'nodes')}: must be a list")
    run_seconds = _number_map(report.get("run_seconds") or {}, source, _key(where, "run_seconds"))
    rows = tuple(
        _row(node, source, f"{_key(where, 'nodes')}[{i}]", run_seconds)
        for i, node in enumerate(nodes)
    )
    counts = report.get("counts") or {}
    return Timeline(
        command=command,
        goal=_optional_text(report, "goal", source, where),
        flake=_optional_text(report, "flake", source, where),
        started_at=_optional_text(report, "started_at", source, where) or "",
        seconds=_number(report.get("seconds", 0.0), source, _key(where, "seconds")),
        counts={str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
        if isinstance(counts, dict)
        else {},
        interrupted=report.get("interrupted") is True,
        rows=rows,
    )


def _row(value: object, source: str, where: str, run_seconds: Mapping[str, float]) -> Row:
    node = _mapping(value, source, where)
    name = _text(node, "node", source, where)
    result = _text(node, "result", source, where)
    seconds = _number_map(node.get("seconds") or {}, source, _key(where, "seconds"))
    spans = node.get("spans")
    if spans is not None:
        if not isinstance(spans, list):
            raise UsageError(f"{source}: {_key(where, 'spans')}: must be a list")
        bars = tuple(_bar(s, source, f"{_key(where, 'spans')}[{i}]") for i, s in enumerate(spans))
        placed = True
    else:
        bars = _end_to_end(seconds, run_seconds)
        placed = False
    error = node.get("error")
    text: str | None = None
    note = _optional_text(node, "detail", source, where) or ""
    if error is not None:
        problem = _mapping(error, source, _key(where, "error"))
        message = _text(problem, "message", source, _key(where, "error"))
        parts = [message]
        command = problem.get("command")
        if isinstance(command, str) and command:
            parts.append(f"command: {command}")
        output = problem.get("output")
        if isinstance(output, str) and output:
            parts.append(output.rstrip())
        text = "\n".join(parts)
        note = (message.splitlines() or [""])[0]
    reason = node.get("rollback_reason")
    if not note and isinstance(reason, str):
        note = reason
    return Row(name, result, bars, placed, note, text)


def _bar(value: object, source: str, where: str) -> Bar:
    span = _mapping(value, source, where)
    return Bar(
        stage=_text(span, "stage", source, where),
        start=_number(span.get("start"), source, _key(where, "start")),
        seconds=_number(span.get("seconds"), source, _key(where, "seconds")),
    )


def _end_to_end(seconds: Mapping[str, float], run_seconds: Mapping[str, float]) -> tuple[Bar, ...]:
    """Stages without start times, one after the other in a deploy's order (eval and build
    from the run's own timings when the node went through them)."""
    order = list(STAGE_COLOURS)
    stages = sorted(seconds, key=lambda s: order.index(s) if s in order else len(order))
    bars: list[Bar] = []
    at = 0.0
    for stage in stages:
        length = run_seconds.get(stage, seconds[stage])
        bars.append(Bar(stage, at, length))
        at += length
    return tuple(bars)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _mapping(value: object, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{source}: {where or 'the document'}: must be an object")
    return value


def _text(obj: Mapping[str, Any], key: str, source: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise UsageError(f"{source}: {_key(where, key)}: must be a string, got {value!r}")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, source: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{source}: {_key(where, key)}: must be a string or null")
    return value


def _number(value: object, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{source}: {where}: must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{source}: {where}: must be a finite number >= 0, got {value!r}")
    return number


def _number_map(value: object, source: str, where: str) -> dict[str, float]:
    mapping = _mapping(value, source, where)
    return {str(k): _number(v, source, f"{where}.{k}") for k, v in mapping.items()}


# --- the page ---


def page(timeline: Timeline) -> str:
    """The whole HTML document."""
    total = max(
        [timeline.seconds, *(b.start + b.seconds for r in timeline.rows for b in r.bars)],
        default=0.0,
    )
    total = total if total > 0 else 1.0
    title = " ".join(w for w in ("nixherd", timeline.command, timeline.goal or "") if w)
    counts = ", ".join(f"{n} {k}" for k, n in timeline.counts.items()) or "no nodes"
    facts = [
        f"{len(timeline.rows)} nodes: {counts}",
        f"{timeline.seconds:.1f} s",
        f"started {timeline.started_at}" if timeline.started_at else "",
        f"flake {timeline.flake}" if timeline.flake else "",
        "interrupted" if timeline.interrupted else "",
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing to fetch, nothing to run: the page is complete as it is.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="facts">{_e(" · ".join(f for f in facts if f))}</p>',
        _legend(),
        '<div class="chart">',
        _axis(total),
        *(_row_html(row, total) for row in timeline.rows),
        "</div>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _legend() -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
        f"{_e(stage)}</span>"
        for stage, colour in STAGE_COLOURS.items()
    )
    return f'<div class="legend">{items}</div>'


def _axis(total: float) -> str:
    step = _tick_step(total)
    ticks = []
    at = 0.0
    while at <= total + 1e-9:
        ticks.append(f'<span class="tick" style="left:{100 * at / total:.3f}%">{at:g} s</span>')
        at += step
    return (
        '<div class="row axis"><div class="name"></div>'
        f'<div class="track">{"".join(ticks)}</div><div class="result"></div></div>'
    )


def _tick_step(total: float) -> float:
    """A round step giving at most ~10 ticks."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if total / step <= 10:
            return float(step)
    return float(math.ceil(total / 10))


def _row_html(row: Row, total: float) -> str:
    # A stage that overlaps an earlier one (an early probe during the build) is drawn in the
    # lower half of the row, so that neither hides the other.
    drawn: list[str] = []
    end = 0.0
    for bar in row.bars:
        drawn.append(_bar_html(bar, total, under=bar.start < end - 1e-6))
        end = max(end, bar.start + bar.seconds)
    bars = "".join(drawn)
    result_class = "result-" + "-".join(row.result.split())
    approx = "" if row.placed else '<span class="approx">no start times: end to end</span>'
    error = ""
    if row.error is not None:
        error = (
            f'<details class="error"><summary>{_e(row.note)}</summary>'
            f"<pre>{_e(row.error)}</pre></details>"
        )
    elif row.note:
        error = f'<div class="note">{_e(row.note)}</div>'
    return (
        f'<div class="row node {_e(result_class)}" data-node="{_e(row.node)}">'
        f'<div class="name" title="{_e(row.node)}">{_e(row.node)}</div>'
        f'<div class="track">{bars}{approx}</div>'
        f'<div class="result">{_e(row.result)}</div>'
        f'<div class="detail">{error}</div></div>'
    )


def _bar_html(bar: Bar, total: float, *, under: bool) -> str:
    left = 100 * bar.start / total
    width = max(100 * bar.seconds / total, _MIN_WIDTH)
    colour = STAGE_COLOURS.get(bar.stage, _OTHER_COLOUR)
    tip = f"{bar.stage}: {bar.seconds:.2f} s, from {bar.start:.2f} s"
    return (
        f'<span class="bar{" under" if under else ""}" data-stage="{_e(bar.stage)}" '
        f'title="{_e(tip)}" '
        f'style="left:{left:.3f}%;width:{width:.3f}%;background:{colour}"></span>'
    )


def write(path: str, text: str) -> None:
    """The page in the file `path`, atomically (a browser never loads half of it)."""
    import os
    import tempfile

    from nixherd.errors import NixherdError

    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nixherd-timeline-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise NixherdError(f"cannot write the timeline to {path}: {exc}") from exc


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}
.facts{color:#555;margin:0 0 12px}
.legend{margin:0 0 12px}
.key{display:inline-block;margin-right:12px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;
border-radius:2px}
.chart{border-top:1px solid #ddd}
.row{display:grid;grid-template-columns:minmax(120px,220px) 1fr 110px minmax(0,320px);
gap:8px;align-items:start;padding:4px 0;border-bottom:1px solid #eee}
.name{font-family:ui-monospace,monospace;overflow:hidden;text-overflow:ellipsis;
white-space:nowrap}
.track{position:relative;height:20px;background:#f6f6f6;border-radius:3px}
.axis .track{background:none;height:16px}
.tick{position:absolute;top:0;font-size:11px;color:#777;border-left:1px solid #ccc;
padding-left:2px;white-space:nowrap}
.bar{position:absolute;top:2px;height:16px;border-radius:2px;opacity:.9}
.bar.under{top:11px;height:8px;outline:1px solid #fff}
.approx{position:absolute;right:4px;top:2px;font-size:11px;color:#777}
.result{font-weight:600}
.result-ok .result,.result-up-to-date .result{color:#2e7d32}
.result-failed .result,.result-interrupted .result{color:#c62828}
.result-rolled-back .result{color:#ef6c00}
.result-not-attempted .result{color:#777}
.detail{font-size:12px;color:#444;min-width:0}
.note{overflow-wrap:anywhere}
details.error summary{cursor:pointer;color:#c62828;overflow-wrap:anywhere}
details.error pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fafafa;
border:1px solid #eee;padding:6px;margin:4px 0 0;max-height:320px;overflow:auto}
"""
