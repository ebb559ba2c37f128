"""Rendering a run's events: a live view on a terminal, plain `node | line` otherwise, per-node
log files, and the final summary table.

Events arrive from worker threads and update the state under one lock; rich is never called
while that lock is held (its live view has its own lock and refresh thread), the view draws
from a snapshot. rich is imported only when a live view or a rich table is drawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from nixherd.events import Event
    from nixherd.fleet.report import NodeResult, RunReport

# How many nodes the live view lists before it folds the rest into one line.
MAX_ROWS_FALLBACK = 40
REFRESH_PER_SECOND = 8
RUN_LOG = "run.log"
# Stages run once for the whole run (one nix process), before any node's own stages.
_RUN_WIDE_STAGES = frozenset({"eval", "build"})


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def new_log_dir(base: str) -> str:
    """A fresh `<base>/<timestamp>` directory for this run's logs."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(base, stamp)
    suffix = 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            suffix += 1
            path = os.path.join(base, f"{stamp}-{suffix}")


@dataclass
class _Row:
    stage: str = "waiting"
    started: float | None = None
    stage_started: float | None = None
    finished: float | None = None
    outcome: str | None = None
    failed: bool = False
    last: str = ""


@dataclass
class _Logs:
    """One append-only file per node (and one for the run), opened on first use."""

    directory: str | None
    files: dict[str, IO[str]] = field(default_factory=dict)

    def write(self, node: str, text: str) -> None:
        if self.directory is None:
            return
        handle = self.files.get(node)
        if handle is None:
            from nixherd.events import RUN_WIDE

            name = RUN_LOG if node == RUN_WIDE else f"{node}.log"
            handle = self.files[node] = open(  # noqa: SIM115 (closed in close())
                os.path.join(self.directory, name), "a", encoding="utf-8"
            )
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        handle.write(f"{stamp} {text}\n")
        handle.flush()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files.clear()


class Progress:
    """An EventSink drawing the run: call it with events, use it as a context manager."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        title: str,
        live: bool | None = None,
        verbose: bool = False,
        log_dir: str | None = None,
        stream: TextIO | None = None,
        show_lines: bool = True,
        show_stages: bool = True,
        build_logs: bool = False,
    ) -> None:
        self.names = list(names)
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.live_mode = is_terminal(self.stream) if live is None else live
        self.verbose = verbose
        self.show_lines = show_lines
        self.show_stages = show_stages
        # -L: the build's lines (run-wide) shown as they come, in the live view too.
        self.build_logs = build_logs
        self.rows = {name: _Row() for name in self.names}
        self.width = max((len(n) for n in self.names), default=1)
        self.lock = threading.Lock()
        self.logs = _Logs(log_dir)
        self.log_dir = log_dir
        self.run_line = ""
        self.started = time.monotonic()
        self._announced: set[str] = set()
        self._live: Any = None
        self._above: list[str] = []  # -v lines to print above the live view, outside the lock
        # Once closed, late events (a node given up on after a second Ctrl-C, ending anyway
        # while the summary is printed) are dropped: the run's account is given.
        self._closed = False

    # --- lifecycle ---

    def __enter__(self) -> Progress:
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(
                get_renderable=self._render,
                console=console,
                refresh_per_second=REFRESH_PER_SECOND,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The live view off while the terminal is used for something else (a question)."""
        live = self._live
        if live is not None:
            live.stop()
        try:
            yield
        finally:
            if live is not None:
                live.start()

    def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()
        with self.lock:
            self._closed = True
            self.logs.close()

    # --- events ---

    def __call__(self, event: Event) -> None:
        from nixherd.events import (
            RUN_WIDE,
            Interrupted,
            LogLine,
            NodeFinished,
            StageFinished,
            StageStarted,
        )

        now = time.monotonic()
        notice: str | None = None
        with self.lock:
            if self._closed:
                return
            match event:
                case StageStarted(node=node, stage=stage):
                    row = self._row(node)
                    row.stage, row.stage_started = stage.value, now
                    if row.started is None:
                        row.started = now
                    self.logs.write(node, f"> {stage.value}")
                    self._plain_stage(node, stage.value)
                case StageFinished(node=node, stage=stage, seconds=seconds):
                    self.logs.write(node, f"< {stage.value} ({seconds:.2f} s)")
                    if stage.value in _RUN_WIDE_STAGES:
                        # The build's last line ("building ...") is over with it: the
                        # header would otherwise show it for the rest of the run.
                        self.run_line = ""
                case LogLine(node=node, line=line):
                    self.logs.write(node, line)
                    self._line(node, line)
                case NodeFinished(node=node, outcome=outcome, error=error):
                    row = self._row(node)
                    row.finished, row.outcome, row.failed = now, outcome.value, outcome.failed
                    row.stage = outcome.value
                    if error:
                        row.last = error.splitlines()[0]
                    text = outcome.value + (f": {error}" if error else "")
                    self.logs.write(node, f"= {text}")
                    if not self.live_mode and self.show_stages:
                        elapsed = f" ({now - row.started:.1f} s)" if row.started else ""
                        first, *rest = text.splitlines() or [""]
                        self._print(node, first + elapsed)
                        for extra in rest:
                            self._print(node, "  " + extra)
                case Interrupted(in_flight=in_flight, aborting=aborting):
                    notice = self._interrupted(in_flight, aborting)
                    self.logs.write(RUN_WIDE, notice)
            above, self._above = self._above, []
        live = self._live
        if above and live is not None:
            for text in above:
                live.console.print(text, markup=False, highlight=False)
        if notice is not None:
            # Said at once, on the terminal, whatever the view: the user just pressed a key.
            if live is not None:
                live.console.print(notice, markup=False, highlight=False)
            else:
                sys.stderr.write(notice + "\n")
                sys.stderr.flush()

    def _interrupted(self, in_flight: Sequence[str], aborting: bool) -> str:
        """The words for a Ctrl-C: what stops, and each node in flight with its stage."""
        nodes = ", ".join(f"{n} ({self._row(n).stage})" for n in in_flight) or "none"
        if aborting:
            return (
                f"nixherd: Ctrl-C again: aborting the nodes in flight: {nodes}; their "
                "activations are stopped and rolled back, the rest is given up within seconds"
            )
        return (
            f"nixherd: Ctrl-C: no new node starts; in flight: {nodes}. They finish; "
            "Ctrl-C again aborts them (activations roll back)"
        )

    def _row(self, node: str) -> _Row:
        row = self.rows.get(node)
        if row is None:
            row = self.rows[node] = _Row()
            if node != "*":
                self.names.append(node)
                self.width = max(self.width, len(node))
        return row

    def _plain_stage(self, node: str, stage: str) -> None:
        if self.live_mode or not self.show_stages:
            return
        # Evaluation and the build run once for all nodes: say so once, not once per node.
        if stage in _RUN_WIDE_STAGES:
            if stage not in self._announced:
                self._announced.add(stage)
                self._print("*", f"{stage} ({len(self.names)} nodes)")
            return
        self._print(node, f"{stage}")

    def _line(self, node: str, line: str) -> None:
        from nixherd.events import RUN_WIDE

        build_log = self.build_logs and node == RUN_WIDE
        if node == RUN_WIDE:
            self.run_line = line
        else:
            self._row(node).last = line
        if not (self.show_lines or build_log):
            return
        if not self.live_mode:
            self._print(node, line)
        elif self.verbose or build_log:
            self._above.append(f"{node.ljust(self.width)} | {line}")

    def _print(self, node: str, text: str) -> None:
        self.stream.write(f"{node.ljust(self.width)} | {text}\n")
        self.stream.flush()

    # --- the live view ---

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        with self.lock:
            names = list(self.names)
            rows = {name: dataclasses.replace(self.rows[name]) for name in names}
            run_line = self.run_line
        columns, height = self._size()
        name_width = min(self.width, 30)
        # What is left of the line for each node's last output (stage and time take ~20 chars).
        last_width = max(columns - name_width - 2 - 11 - 2 - 6 - 2 - 1, 10)
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, width=name_width, overflow="ellipsis")
        table.add_column(no_wrap=True, width=11, overflow="ellipsis")
        table.add_column(justify="right", no_wrap=True, width=6)
        table.add_column(no_wrap=True, width=last_width, overflow="ellipsis")
        done = sum(1 for r in rows.values() if r.finished is not None)
        head = Text(f"{self.title}: {done}/{len(names)} done, {now - self.started:.0f} s", "bold")
        if run_line:
            head.append(f"  {run_line}", style="dim")
        head.no_wrap, head.overflow = True, "ellipsis"
        # Rows stay in the selection's order (a row that moves as its node finishes is lost
        # to the eye). When they do not all fit, the ones that need eyes are kept: nodes at
        # work, then failures, then the rest; still shown in the selection's order.
        ranked = sorted(
            range(len(names)),
            key=lambda i: (
                rows[names[i]].finished is not None and not rows[names[i]].failed,
                rows[names[i]].finished is not None,
            ),
        )
        shown = [names[i] for i in sorted(ranked[:height])]
        for name in shown:
            row = rows[name]
            end = row.finished if row.finished is not None else now
            elapsed = f"{end - row.started:.1f}s" if row.started is not None else ""
            if row.failed:
                style = "red"
            elif row.finished is not None:
                style = "green"
            else:
                style = "" if row.started is not None else "dim"
            table.add_row(
                Text(name, style=style),
                Text(row.stage, style=style),
                elapsed,
                Text(row.last, style="dim"),
            )
        if len(ranked) > len(shown):
            # Below the table, not in its name column: that may be narrower than the words.
            more = Text(f"... {len(ranked) - len(shown)} more", style="dim")
            return Group(head, table, more)
        return Group(head, table)

    def _size(self) -> tuple[int, int]:
        """Columns, and rows for nodes (the terminal's, minus the header and some slack)."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            return 100, MAX_ROWS_FALLBACK
        return size.columns, max(size.lines - 4, 3)


# --- the summary ---


def _seconds(result: NodeResult) -> str:
    total = sum(v for k, v in result.stages.items() if k not in _RUN_WIDE_STAGES)
    return f"{total:.1f}" if total else "-"


def _note(result: NodeResult) -> str:
    if result.error is not None:
        return result.error.summary()
    if result.rolled_back:
        return f"rolled back: {result.rollback_reason or ''}".rstrip(": ")
    return result.detail or ""


def summary_rows(report: RunReport) -> list[tuple[str, str, str, str]]:
    return [(r.node, r.outcome.value, _seconds(r), _note(r)) for r in report.nodes]


def print_failures(report: RunReport, stream: TextIO) -> None:
    """Why each failed node failed: its message whole (Nix's error with its file positions
    spans lines), the failing command and its last lines."""
    for result in report.nodes:
        error = result.error
        if error is None or not (error.command or error.output or "\n" in error.message):
            continue
        first, *rest = error.message.splitlines() or [""]
        stream.write(f"\n{result.node}: {first}\n")
        stream.writelines(f"  {line}".rstrip() + "\n" for line in rest)
        if error.command:
            stream.write(f"  command: {error.command}\n")
        for text in (error.output or "").splitlines()[-8:]:
            stream.write(f"  | {text}\n")
    stream.flush()


def print_summary(
    report: RunReport,
    *,
    stream: TextIO | None = None,
    rich: bool | None = None,
    details: TextIO | None = None,
) -> None:
    """The summary table, the details of every failure (to `details`, default the same
    stream), the counts and where the logs are."""
    out = stream if stream is not None else sys.stdout
    use_rich = (is_terminal(out) and "NO_COLOR" not in os.environ) if rich is None else rich
    rows = summary_rows(report)
    headers = ("node", "result", "seconds", "note")
    if use_rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, box=None, pad_edge=False, header_style="bold")
        styles = {"failed": "red", "rolled back": "yellow", "interrupted": "red"}
        for row in rows:
            table.add_row(*row, style=styles.get(row[1], ""))
        Console(file=out).print(table)
    else:
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]
        for cells in (headers, *rows):
            out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
            out.write("\n")
    out.flush()
    print_failures(report, details if details is not None else out)
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items())
    took = report.finished_at - report.started_at
    out.write(f"\n{len(report.nodes)} nodes: {counts or 'none'} in {took:.1f} s")
    if report.interrupted:
        out.write(" (interrupted)")
    out.write("\n")
    if report.log_dir:
        out.write(f"logs: {report.log_dir}\n")
    out.flush()
