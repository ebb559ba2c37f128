"""The fleet runner: one operation per node, at most N nodes at once, one Ctrl-C rule, one report.

`run_nodes(nodes, work, ...)` runs `work(node)` for every node in worker threads and gathers a
`RunReport` with one `NodeResult` per node, announcing each node's end (NodeFinished) as its work
returns. Every fleet command (fleet/commands.py) is a client of it; `apply`'s pipeline uses its
engine, `fan_out`, directly (it adds waves and a stop rule).

The Ctrl-C rule, the same for every command: the first Ctrl-C starts no new node and lets the
nodes in flight finish (each decides at its own safe points whether to stop; an activation in
flight always finishes, see nixherd.node.activation); the nodes never started are reported "not
attempted" and the report is marked interrupted.

A node's failure (a NixherdError out of its work) is that node's result: the other nodes go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from nixherd.errors import NixherdError
from nixherd.events import EventSink, NodeFinished, Outcome
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport, order

R = TypeVar("R")

# The scheduler wakes this often to notice a Ctrl-C even while every node is busy.
_TICK = 0.2


class Named(Protocol):
    """What the runner needs of a node: its name (the work gets the node itself)."""

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(frozen=True, slots=True)
class FanOut(Generic[R]):
    """Results of the nodes that ran, and the nodes never started (stopped or interrupted)."""

    results: dict[str, R]
    not_started: tuple[str, ...]
    interrupted: bool


def fan_out(
    names: Sequence[str],
    work: Callable[[str], R],
    *,
    parallel: int,
    cancel: threading.Event,
    stop: Callable[[str, R], bool] | None = None,
) -> FanOut[R]:
    """Run `work(name)` for each name, at most `parallel` at once (0: all at once).

    `stop(name, result)` is called in this thread as each node finishes; once it returns True no
    new node starts. Returns when every started node is done.
    """
    queue = list(names)
    width = len(queue) if parallel <= 0 else min(parallel, len(queue))
    results: dict[str, R] = {}
    stopped = False
    if not queue:
        return FanOut(results, (), cancel.is_set())
    with (
        _ctrl_c_cancels(cancel),
        cf.ThreadPoolExecutor(max_workers=width, thread_name_prefix="nixherd-node") as pool,
    ):
        running: dict[cf.Future[R], str] = {}
        while True:
            while queue and len(running) < width and not stopped and not cancel.is_set():
                name = queue.pop(0)
                running[pool.submit(work, name)] = name
            if not running:
                break
            done, _ = cf.wait(running, timeout=_TICK, return_when=cf.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                results[name] = result = future.result()
                if stop is not None and not stopped and stop(name, result):
                    stopped = True
    return FanOut(results, tuple(queue), cancel.is_set())


@dataclass(frozen=True, slots=True)
class FleetRun(Generic[R]):
    """One run over the nodes: its report, and what each node's work returned or raised."""

    report: RunReport
    values: Mapping[str, R]  # the nodes whose work returned, in the nodes' order
    errors: Mapping[str, NixherdError]  # the nodes whose work failed

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted

    def outcomes(self) -> dict[str, R | NixherdError]:
        """Every node that ran, in the nodes' order: its value, or its error."""
        return {
            r.node: self.values[r.node] if r.node in self.values else self.errors[r.node]
            for r in self.report.nodes
            if r.node in self.values or r.node in self.errors
        }

    def completed(self) -> FleetRun[R]:
        """This run, or KeyboardInterrupt when a Ctrl-C stopped it: for the commands whose
        output is a table of every node (a partial one would read as the whole fleet)."""
        if self.interrupted:
            raise KeyboardInterrupt
        return self


def run_nodes(
    nodes: Sequence[N],
    work: Callable[[N], R],
    *,
    command: str,
    result: Callable[[str, R], NodeResult],
    parallel: int,
    emit: EventSink,
    cancel: threading.Event | None = None,
    goal: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> FleetRun[R]:
    """`work(node)` for each node, `parallel` at once (0: all), gathered into one report.

    `result(name, value)` says how a node's value reads in the report; a NixherdError out of
    `work` makes the node FAILED with that error. Results follow the order of `nodes`.
    """
    started_at = time.time()
    by_name = {node.name: node for node in nodes}
    names = list(by_name)
    values: dict[str, R] = {}
    errors: dict[str, NixherdError] = {}

    def announced(name: str) -> NodeResult:
        try:
            value = work(by_name[name])
        except NixherdError as exc:
            errors[name] = exc
            node_result = NodeResult(name, Outcome.FAILED, error=ErrorInfo.from_exception(exc))
        else:
            values[name] = value
            node_result = result(name, value)
        error = node_result.error
        emit(
            NodeFinished(
                name, node_result.outcome, error.summary() if error else node_result.detail
            )
        )
        return node_result

    run = fan_out(names, announced, parallel=parallel, cancel=cancel or threading.Event())
    results = dict(run.results)
    for name in run.not_started:
        emit(NodeFinished(name, Outcome.NOT_ATTEMPTED, "interrupted"))
        results[name] = NodeResult(name, Outcome.NOT_ATTEMPTED, detail="interrupted")
    report = RunReport(
        command=command,
        goal=goal,
        flake=None,
        started_at=started_at,
        finished_at=time.time(),
        nodes=order(list(results.values()), names),
        interrupted=run.interrupted,
        options=dict(options or {}),
    )
    return FleetRun(
        report,
        {n: values[n] for n in names if n in values},
        {n: errors[n] for n in names if n in errors},
    )


def reported(_name: str, value: NodeResult) -> NodeResult:
    """`result` for work that already returns its node's NodeResult."""
    return value


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """While nodes run, a Ctrl-C only sets `cancel`.

    A KeyboardInterrupt could land anywhere, e.g. inside `pool.submit` after the node started but
    before its future is recorded: that node would run unwatched and be reported as never
    started. A handler that sets a flag cannot lose anything. (Only the main thread can install
    it; elsewhere no KeyboardInterrupt arrives anyway.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        cancel.set()

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
