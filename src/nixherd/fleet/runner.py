"""The fleet runner: one operation per node, at most N nodes at once, one Ctrl-C rule, one report.

`run_nodes(nodes, work, ...)` runs `work(node)` for every node in worker threads and gathers a
`RunReport` with one `NodeResult` per node, announcing each node's end (NodeFinished) as its work
returns. Every fleet command (fleet/commands.py) is a client of it; `apply`'s pipeline uses its
engine, `fan_out`, directly (it adds waves and a stop rule).

The Ctrl-C rule, the same for every command: the first Ctrl-C starts no new node and lets the
nodes in flight finish (each decides at its own safe points whether to stop; an activation in
flight finishes, see nixherd.node.activation); it is announced at once (an `Interrupted` event
naming the nodes in flight). The second Ctrl-C fires the run's aborts (nixherd.node.abort: an
activation in flight is stopped and its node rolls back), waits for their answers and for the
nodes they ended (at most ABORT_GRACE seconds), and gives up on whatever is still in flight:
those nodes are "abandoned", and their workers, daemon threads, no longer hold anything up (the
commands they run end with nixherd, see nixherd.run.process). The nodes never started are
reported "not attempted" and the report is marked interrupted.

A node's failure (a NixherdError out of its work) is that node's result: the other nodes go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import queue as queues
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from nixherd.errors import NixherdError
from nixherd.events import EventSink, Interrupted, NodeFinished, Outcome, discard
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport, order
from nixherd.node.abort import Aborts

R = TypeVar("R")

# The scheduler wakes this often to notice a Ctrl-C even while every node is busy.
_TICK = 0.2
# After the second Ctrl-C: the longest wait for the aborts and the nodes in flight, and how long
# the nodes get to end once every abort has answered (their workers see the same settled status).
ABORT_GRACE = 20.0
ABORT_SETTLE = 2.0


class Named(Protocol):
    """What the runner needs of a node: its name (the work gets the node itself)."""

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(frozen=True, slots=True)
class FanOut(Generic[R]):
    """Results of the nodes that ran, the nodes never started (stopped or interrupted), and the
    nodes given up on in flight after a second Ctrl-C."""

    results: dict[str, R]
    not_started: tuple[str, ...]
    interrupted: bool
    abandoned: tuple[str, ...] = ()


def fan_out(
    names: Sequence[str],
    work: Callable[[str], R],
    *,
    parallel: int,
    cancel: threading.Event,
    stop: Callable[[str, R], bool] | None = None,
    emit: EventSink = discard,
    aborts: Aborts | None = None,
) -> FanOut[R]:
    """Run `work(name)` for each name, at most `parallel` at once (0: all at once).

    `stop(name, result)` is called in this thread as each node finishes; once it returns True no
    new node starts. Returns when every started node is done, or after a second Ctrl-C, when
    `aborts` have answered (see the module's docstring). An exception out of `work` other than
    the node's own result is raised here.
    """
    if not names:
        return FanOut({}, (), cancel.is_set())
    scheduler = _Scheduler(list(names), work, parallel, cancel, stop)
    presses = _Presses(cancel)
    said_first = False
    abort_deadline: float | None = None
    quiet_since: float | None = None
    with _ctrl_c_counts(presses):
        while scheduler.step():
            running = tuple(scheduler.running)
            if cancel.is_set() and not said_first:
                said_first = True
                emit(Interrupted(running, aborting=False))
            if not presses.second.is_set():
                continue
            now = time.monotonic()
            if abort_deadline is None:
                abort_deadline = now + ABORT_GRACE
                if aborts is not None:
                    aborts.fire()
                emit(Interrupted(running, aborting=True))
            # Quiet: no abort waiting for its answer (one that registers late restarts it).
            if aborts is not None and aborts.pending():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            if now >= abort_deadline or (
                quiet_since is not None and now - quiet_since >= ABORT_SETTLE
            ):
                return FanOut(scheduler.results, tuple(scheduler.queue), True, running)
    return FanOut(scheduler.results, tuple(scheduler.queue), cancel.is_set())


class _Scheduler(Generic[R]):
    """The nodes of one fan_out: started in daemon threads (a worker given up on after a second
    Ctrl-C must not keep nixherd from exiting), collected in this thread."""

    def __init__(
        self,
        queue: list[str],
        work: Callable[[str], R],
        parallel: int,
        cancel: threading.Event,
        stop: Callable[[str, R], bool] | None,
    ) -> None:
        self.queue = queue
        self.work = work
        self.width = len(queue) if parallel <= 0 else min(parallel, len(queue))
        self.cancel = cancel
        self.stop = stop
        self.stopped = False
        self.running: list[str] = []  # in the order they started
        self.results: dict[str, R] = {}
        self._futures: dict[str, cf.Future[R]] = {}
        self._done: queues.SimpleQueue[str] = queues.SimpleQueue()

    def step(self) -> bool:
        """Start what may start, collect what ended (waiting a tick at most); False when no
        node runs any more."""
        while (
            self.queue
            and len(self.running) < self.width
            and not self.stopped
            and not self.cancel.is_set()
        ):
            self._start(self.queue.pop(0))
        if not self.running:
            return False
        try:
            name = self._done.get(timeout=_TICK)
        except queues.Empty:
            return True
        while True:
            self._collect(name)
            try:
                name = self._done.get_nowait()
            except queues.Empty:
                break
        return bool(self.running) or bool(self.queue and not self.stopped)

    def _start(self, name: str) -> None:
        future: cf.Future[R] = cf.Future()
        self._futures[name] = future
        self.running.append(name)

        def one() -> None:
            try:
                future.set_result(self.work(name))
            except BaseException as exc:  # raised by the scheduler's thread, in _collect
                future.set_exception(exc)
            self._done.put(name)

        threading.Thread(target=one, name=f"nixherd-{name}", daemon=True).start()

    def _collect(self, name: str) -> None:
        self.running.remove(name)
        self.results[name] = value = self._futures.pop(name).result()
        if self.stop is not None and not self.stopped and self.stop(name, value):
            self.stopped = True


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
    aborts: Aborts | None = None,
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

    run = fan_out(
        names,
        announced,
        parallel=parallel,
        cancel=cancel or threading.Event(),
        emit=emit,
        aborts=aborts,
    )
    results = dict(run.results)
    for name in run.abandoned:
        detail = abandoned_detail(name, aborts)
        emit(NodeFinished(name, Outcome.INTERRUPTED, detail))
        results[name] = NodeResult(name, Outcome.INTERRUPTED, detail=detail)
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


def abandoned_detail(name: str, aborts: Aborts | None) -> str:
    """What is known of a node given up on after the second Ctrl-C: its abort's answer, if any."""
    said = aborts.said(name) if aborts is not None else None
    if said is not None:
        return said
    if aborts is not None and aborts.registered(name):
        return "abandoned after a second Ctrl-C; its activation had ended: the outcome is unknown"
    return "abandoned in flight after a second Ctrl-C: the outcome is unknown"


def reported(_name: str, value: NodeResult) -> NodeResult:
    """`result` for work that already returns its node's NodeResult."""
    return value


class _Presses:
    """Ctrl-C presses while nodes run: the first sets `cancel`, the next one `second`."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.second = threading.Event()

    def press(self) -> None:
        if self.cancel.is_set():
            self.second.set()
        else:
            self.cancel.set()


@contextlib.contextmanager
def _ctrl_c_counts(presses: _Presses) -> Iterator[None]:
    """While nodes run, a Ctrl-C only counts a press; the scheduler acts on it.

    A KeyboardInterrupt could land anywhere, e.g. after a node's thread started but before it
    is recorded: that node would run unwatched and be reported as never started. A handler that
    sets a flag cannot lose anything, and emits nothing (the scheduler does, within a tick: a
    sink called from a signal handler could wait on a lock its own thread holds). Only the main
    thread can install it; elsewhere no KeyboardInterrupt arrives anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        presses.press()

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
