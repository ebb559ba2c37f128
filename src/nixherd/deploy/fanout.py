"""Running one piece of work per node in parallel: at most N at once, stoppable, Ctrl-C aware.

A node's work runs in a worker thread and never raises (it returns its result); the calling
thread only schedules. A Ctrl-C arrives in the calling thread: it sets `cancel`, no new node
starts, and the nodes already running are waited for (each decides at its own safe points
whether to stop; an activation in flight always finishes).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    interrupted = False
    stopped = False
    if not queue:
        return FanOut(results, (), False)
    with cf.ThreadPoolExecutor(max_workers=width, thread_name_prefix="nixherd-node") as pool:
        running: dict[cf.Future[R], str] = {}
        while True:
            try:
                while queue and len(running) < width and not stopped and not cancel.is_set():
                    name = queue.pop(0)
                    running[pool.submit(work, name)] = name
                if not running:
                    break
                done, _ = cf.wait(running, timeout=_TICK, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    # Stored before it leaves `running`: a Ctrl-C between the two loses nothing.
                    name = running[future]
                    result = results[name] = future.result()
                    del running[future]
                    if stop is not None and not stopped and stop(name, result):
                        stopped = True
            except KeyboardInterrupt:
                interrupted = True
                cancel.set()
    return FanOut(results, tuple(queue), interrupted or cancel.is_set())
