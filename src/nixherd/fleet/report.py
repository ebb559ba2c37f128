"""What a run did on each node (results, timings, errors) and its JSON report."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nixherd.errors import CommandError, NixherdError
from nixherd.events import Outcome

REPORT_VERSION = 1
# Enough of a failing command's output to see why, small enough for a report of 1,000 nodes.
TAIL_LINES = 20


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
            if last:
                return f"{first}: {last}"
        return first

    def render(self) -> str:
        lines = [self.message]
        if self.command:
            lines.append(f"command: {self.command}")
        if self.output:
            lines.extend(self.output.rstrip().splitlines())
        return "\n".join(lines)

    def to_data(self) -> dict[str, Any]:
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

    @property
    def failed(self) -> bool:
        return self.outcome.failed

    def to_data(self) -> dict[str, Any]:
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
            "error": self.error.to_data() if self.error else None,
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

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(r for r in self.nodes if r.failed)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def counts(self) -> dict[str, int]:
        counter = Counter(r.outcome.value for r in self.nodes)
        return {o.value: counter[o.value] for o in Outcome if counter[o.value]}

    def to_data(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
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
            "nodes": [r.to_data() for r in self.nodes],
        }


def _iso(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat(
        timespec="milliseconds"
    )


def to_json_text(report: RunReport) -> str:
    return json.dumps(report.to_data(), indent=2) + "\n"


def write_json(report: RunReport, path: str) -> None:
    """Write the report atomically (a reader never sees half a file)."""
    data = to_json_text(report)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nixherd-report-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise NixherdError(f"cannot write the report to {path}: {exc}") from exc


def order(results: Sequence[NodeResult], names: Sequence[str]) -> tuple[NodeResult, ...]:
    """Results in the order of `names` (the selection's order), whatever order they finished."""
    by_name = {r.node: r for r in results}
    return tuple(by_name[n] for n in names if n in by_name)
