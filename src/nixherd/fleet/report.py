"""What a run did on each node (results, timings, errors), and its report as typed data.

The report's shape is declared here, as TypedDicts, once: `RunReport.to_data` builds it (mypy
checks every key), and `nixherd.cli.jsonout` wraps it in the versioned JSON envelope and derives
the published JSON Schema (docs/schema/) from these same declarations.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from nixherd.errors import CommandError, NixherdError
from nixherd.events import Event, EventSink, Outcome, Stage, StageFinished, StageStarted
from nixherd.node.delivery import Delivered

# Enough of a failing command's output to see why, small enough for a report of 1,000 nodes.
TAIL_LINES = 20
# `exec` keeps at most this much of each node's output in its report (the last bytes: where a
# command says how it ended). 1,000 nodes at the bound make a 64 MiB report, still one file a
# JSON parser reads whole; the full output is in the node's log and was streamed live.
OUTPUT_LIMIT = 64 * 1024
# How the watchdog starts the lines it says itself (resources/watchdog.sh, `say`).
_WATCHDOG_PREFIX = re.compile(r"^nixherd: ")


class ErrorData(TypedDict):
    """Why a node failed."""

    message: str
    command: str | None  # the failing command, as a copy-pasteable line
    returncode: int | None  # null: it timed out, or no command failed
    output: str | None  # the last lines of the failing command's output


class OutputData(TypedDict):
    """A command's output on one node (`exec`): stdout and stderr merged, in the order written."""

    text: str  # the output, or its last `OUTPUT_LIMIT` bytes (from a line start) when truncated
    bytes: int  # the size of the whole output, in bytes of UTF-8
    truncated: bool  # true when `text` is only the end of it


class DeliveryData(TypedDict):
    """Which way a node got its system (null when nothing was copied: up to date, or failed
    before the copy)."""

    way: str  # "direct" (pushed from the deployer), "cache" or "build-on-target"
    cache: str | None  # the binary cache's URL, when the node was to substitute from one
    cache_error: str | None  # why the cache was not used (then way is "direct": the fallback)


class SpanData(TypedDict):
    """One stage a node went through, on the run's clock (a stage may come twice: keys)."""

    stage: Annotated[str, Stage]
    start: float  # seconds after the run's `started_at`
    seconds: float


class NodeResultData(TypedDict):
    """How one node ended and what it went through."""

    node: str
    result: Annotated[str, Outcome]
    store_path: str | None
    previous: str | None
    seconds: dict[str, float]  # per stage
    rolled_back: bool
    rollback_reason: str | None
    detail: str | None
    exit_code: int | None  # `exec`: the remote command's exit code
    output: OutputData | None  # `exec`: the command's output (bounded); null elsewhere
    delivery: DeliveryData | None  # `apply`: how the system reached the node
    error: ErrorData | None
    spans: list[SpanData]  # its stages in the order they started (the deploy timeline)


class EvaluationData(TypedDict):
    """What evaluating the nodes cost (fleet/evaluate.py): nix processes of at most
    `node_limit` nodes each, at most `workers` at a time."""

    workers: int
    node_limit: int
    processes: int  # every nix process of the evaluation, restarts and explanations included
    peak_rss_bytes: int | None  # the largest peak resident memory of one of them
    peak_rss_bound_bytes: int | None  # workers x peak: evaluation never held more at once
    seconds: float


class ReportData(TypedDict):
    """A run over the selected nodes (apply, build, exec, rollback, check-health)."""

    command: str
    goal: str | None
    flake: str | None
    started_at: str  # ISO 8601, UTC, milliseconds
    finished_at: str
    seconds: float
    run_seconds: dict[str, float]  # run-wide stages: eval, build
    interrupted: bool
    ok: bool  # no node failed and the run was not interrupted
    counts: dict[str, int]  # nodes per result
    failed: list[str]
    not_attempted: list[str]
    options: dict[str, Any]
    log_dir: str | None
    evaluation: EvaluationData | None  # null: the command evaluated nothing
    nodes: list[NodeResultData]


@dataclass(frozen=True, slots=True)
class Output:
    """What a report keeps of a command's output: at most OUTPUT_LIMIT bytes, its end."""

    text: str
    size: int
    truncated: bool

    @classmethod
    def bounded(cls, text: str, limit: int = OUTPUT_LIMIT) -> Output:
        raw = text.encode("utf-8", "surrogateescape")
        if len(raw) <= limit:
            return cls(text, len(raw), False)
        tail = raw[-limit:]
        # Start at a whole line when the kept part has one (and never inside a character).
        newline = tail.find(b"\n")
        if 0 <= newline < len(tail) - 1:
            tail = tail[newline + 1 :]
        return cls(tail.decode("utf-8", "ignore"), len(raw), True)

    def to_data(self) -> OutputData:
        return {"text": self.text, "bytes": self.size, "truncated": self.truncated}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a node failed: a message, and for a failed command its line and last output lines."""

    message: str
    command: str | None = None
    returncode: int | None = None
    output: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, CommandError):
            status = "timed out" if exc.returncode is None else f"exited with {exc.returncode}"
            return cls(
                message=f"{exc.what or 'command'} failed ({status})",
                command=exc.command_line,
                returncode=exc.returncode,
                output=exc.tail(TAIL_LINES) or None,
            )
        if isinstance(exc, NixherdError):
            return cls(message=str(exc))
        return cls(message=f"{type(exc).__name__}: {exc}")

    def summary(self) -> str:
        """One line for a table cell."""
        first = self.message.splitlines()[0] if self.message else "failed"
        if self.output:
            last = self.output.rstrip().splitlines()[-1].strip()
            # The watchdog's last words ("nixherd: rolled back to X") are often what the
            # message already says: each cause once.
            if last and _WATCHDOG_PREFIX.sub("", last) not in first:
                return f"{first}: {last}"
        return first

    def render(self) -> str:
        lines = [self.message]
        if self.command:
            lines.append(f"command: {self.command}")
        if self.output:
            lines.extend(self.output.rstrip().splitlines())
        return "\n".join(lines)

    def to_data(self) -> ErrorData:
        return {
            "message": self.message,
            "command": self.command,
            "returncode": self.returncode,
            "output": self.output,
        }


@dataclass(frozen=True, slots=True)
class NodeResult:
    """How one node ended and what it went through."""

    node: str
    outcome: Outcome
    store_path: str | None = None
    previous: str | None = None
    stages: Mapping[str, float] = field(default_factory=dict)
    error: ErrorInfo | None = None
    rolled_back: bool = False
    rollback_reason: str | None = None
    detail: str | None = None  # e.g. "copied nothing", "exit 3" (a human note, not an error)
    exit_code: int | None = None  # `exec` only: the remote command's exit code
    output: Output | None = None  # `exec` only: what the command printed (bounded)
    delivery: Delivered | None = None  # `apply`: which way the system reached the node

    @property
    def failed(self) -> bool:
        return self.outcome.failed

    def to_data(self, spans: Sequence[Span] = ()) -> NodeResultData:
        return {
            "node": self.node,
            "result": self.outcome.value,
            "store_path": self.store_path,
            "previous": self.previous,
            "seconds": {k: round(v, 3) for k, v in self.stages.items()},
            "rolled_back": self.rolled_back,
            "rollback_reason": self.rollback_reason,
            "detail": self.detail,
            "exit_code": self.exit_code,
            "output": self.output.to_data() if self.output else None,
            "delivery": _delivery(self.delivery),
            "error": self.error.to_data() if self.error else None,
            "spans": [span.to_data() for span in spans],
        }


@dataclass(frozen=True, slots=True)
class Span:
    """A stage of a node, on the run's clock: `start` seconds after the run began."""

    stage: Stage
    start: float
    seconds: float

    def to_data(self) -> SpanData:
        return {
            "stage": self.stage.value,
            "start": round(self.start, 3),
            "seconds": round(self.seconds, 3),
        }


class SpanRecorder:
    """An EventSink in front of another that notes when each node's stages start and end.

    The core's events carry durations only; this clock, started with the run, places them in
    time for the timeline (a stage that never finished, cut by a crash, is left out). Events
    come from worker threads: one lock.
    """

    def __init__(self, emit: EventSink) -> None:
        self._emit = emit
        self._origin = time.monotonic()
        self._lock = threading.Lock()
        self._open: dict[tuple[str, Stage], float] = {}
        self._done: dict[str, list[Span]] = {}

    def __call__(self, event: Event) -> None:
        now = time.monotonic() - self._origin
        if isinstance(event, StageStarted):
            with self._lock:
                self._open[(event.node, event.stage)] = now
        elif isinstance(event, StageFinished):
            with self._lock:
                start = self._open.pop((event.node, event.stage), now - event.seconds)
                span = Span(event.stage, max(start, 0.0), event.seconds)
                self._done.setdefault(event.node, []).append(span)
        self._emit(event)

    def spans(self) -> dict[str, tuple[Span, ...]]:
        """Each node's finished stages, in the order they started."""
        with self._lock:
            return {
                node: tuple(sorted(spans, key=lambda s: s.start))
                for node, spans in self._done.items()
            }


@dataclass(frozen=True, slots=True)
class RunReport:
    """A whole run: what was asked, when, and every selected node's result."""

    command: str
    goal: str | None
    flake: str | None
    started_at: float
    finished_at: float
    nodes: tuple[NodeResult, ...]
    interrupted: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    stages: Mapping[str, float] = field(default_factory=dict)  # run-wide: eval, build
    log_dir: str | None = None
    evaluation: EvaluationData | None = None
    spans: Mapping[str, Sequence[Span]] = field(default_factory=dict)  # node -> its stages

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(r for r in self.nodes if r.failed)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def counts(self) -> dict[str, int]:
        counter = Counter(r.outcome.value for r in self.nodes)
        return {o.value: counter[o.value] for o in Outcome if counter[o.value]}

    def to_data(self) -> ReportData:
        return {
            "command": self.command,
            "goal": self.goal,
            "flake": self.flake,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": round(self.finished_at - self.started_at, 3),
            "run_seconds": {k: round(v, 3) for k, v in self.stages.items()},
            "interrupted": self.interrupted,
            "ok": self.ok,
            "counts": self.counts(),
            "failed": [r.node for r in self.failed],
            "not_attempted": [r.node for r in self.nodes if r.outcome is Outcome.NOT_ATTEMPTED],
            "options": dict(self.options),
            "log_dir": self.log_dir,
            "evaluation": self.evaluation,
            "nodes": [r.to_data(self.spans.get(r.node, ())) for r in self.nodes],
        }


def _delivery(delivered: Delivered | None) -> DeliveryData | None:
    if delivered is None:
        return None
    return {"way": delivered.way, "cache": delivered.cache, "cache_error": delivered.cache_error}


def _iso(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat(
        timespec="milliseconds"
    )


def order(results: Sequence[NodeResult], names: Sequence[str]) -> tuple[NodeResult, ...]:
    """Results in the order of `names` (the selection's order), whatever order they finished."""
    by_name = {r.node: r for r in results}
    return tuple(by_name[n] for n in names if n in by_name)
