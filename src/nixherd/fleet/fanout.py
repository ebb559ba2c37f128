"""Running one piece of work per node in parallel: at most N at once, stoppable, Ctrl-C aware.

A node's work runs in a worker thread and never raises (it returns its result); the calling
thread only schedules. A Ctrl-C while nodes run sets `cancel`: no new node starts, and the nodes
already running are waited for (each decides at its own safe points whether to stop; an
activation in flight always finishes).
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
from typing import Any, Generic, TypeVar

from nixherd.events import EventSink, NodeFinished, Outcome
from nixherd.fleet.report import NodeResult, RunReport, order

R = TypeVar("R")

# The scheduler wakes this often to notice a Ctrl-C even while every node is busy.
_TICK = 0.2


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


def report_per_node(
    names: Sequence[str],
    work: Callable[[str], NodeResult],
    *,
    command: str,
    goal: str | None = None,
    options: Mapping[str, Any],
    parallel: int,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> RunReport:
    """`work(name)` for each name (as `fan_out`), gathered into the run's report.

    Each node's end is announced (NodeFinished) as its work returns; the nodes a Ctrl-C left
    unstarted are reported "not attempted". Results follow the order of `names`.
    """
    started_at = time.time()

    def announced(name: str) -> NodeResult:
        result = work(name)
        note = result.error.summary() if result.error else result.detail
        emit(NodeFinished(name, result.outcome, note))
        return result

    run = fan_out(names, announced, parallel=parallel, cancel=cancel or threading.Event())
    results = dict(run.results)
    for name in run.not_started:
        emit(NodeFinished(name, Outcome.NOT_ATTEMPTED, "interrupted"))
        results[name] = NodeResult(name, Outcome.NOT_ATTEMPTED, detail="interrupted")
    return RunReport(
        command=command,
        goal=goal,
        flake=None,
        started_at=started_at,
        finished_at=time.time(),
        nodes=order(list(results.values()), names),
        interrupted=run.interrupted,
        options=options,
    )


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
