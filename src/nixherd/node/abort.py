"""The second Ctrl-C's reach into work in flight on the nodes.

Work that can be undone on a node registers how to abort itself while it runs: an activation
does, from the moment its watchdog is launched until it settles (nixherd.node.activation). The
fleet runner fires every registration on the second Ctrl-C. Each abort runs in a thread of its
own, because it is a round trip to a node that may not answer and must not hold the others; a
registration that arrives after the firing is aborted at once. What each abort found (the node
rolled back, or did not answer) is kept, so the run can report a node whose own worker it no
longer waits for.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import assert_never

from nixherd.node.protocol import Status, describe
from nixherd.node.watchdog import Follower, abort

# An abort: a round trip to the node; returns what the node's state is, in words.
Hook = Callable[[], str]


class Aborts:
    """The registrations of one run; thread-safe (nodes register from their workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[int, tuple[str, Hook]] = {}
        self._tokens = itertools.count()
        self._fired = False
        self._running = 0
        self._said: dict[str, str] = {}
        self._registered: set[str] = set()

    @property
    def fired(self) -> bool:
        return self._fired

    def add(self, node: str, hook: Hook) -> int:
        """Register `node`'s abort; a token for `remove`. Once fired, `hook` runs at once."""
        with self._lock:
            token = next(self._tokens)
            self._registered.add(node)
            if not self._fired:
                self._hooks[token] = (node, hook)
                return token
            self._running += 1
        self._start(node, hook)
        return token

    def remove(self, token: int) -> None:
        """The work is over (settled): nothing left to abort."""
        with self._lock:
            self._hooks.pop(token, None)

    def fire(self) -> tuple[str, ...]:
        """Start every registered abort; the nodes they are for."""
        with self._lock:
            self._fired = True
            todo = list(self._hooks.values())
            self._hooks.clear()
            self._running += len(todo)
        for node, hook in todo:
            self._start(node, hook)
        return tuple(node for node, _ in todo)

    def pending(self) -> int:
        """Aborts started and not yet answered (or failed)."""
        with self._lock:
            return self._running

    def said(self, node: str) -> str | None:
        """What the abort of `node` found, once it has answered."""
        with self._lock:
            return self._said.get(node)

    def registered(self, node: str) -> bool:
        """Whether `node` ever had work that could be aborted in this run (it activated)."""
        with self._lock:
            return node in self._registered

    def _start(self, node: str, hook: Hook) -> None:
        def run() -> None:
            try:
                text = hook()
            except Exception as exc:  # a failed abort is that node's news, not the run's end
                text = f"the abort failed ({type(exc).__name__}: {exc}); its state is unknown"
            with self._lock:
                self._said[node] = text
                self._running -= 1

        # A daemon: a node that never answers must not keep nixherd from exiting.
        threading.Thread(target=run, name=f"nixherd-abort-{node}", daemon=True).start()


# How long the abort of a second Ctrl-C waits for the node's answer (it stops a hanging switch:
# up to 7 s, then the previous system's own activation).
ABORT_SECONDS = 60


@contextlib.contextmanager
def abortable(aborts: Aborts | None, follow: Follower, node: str) -> Iterator[None]:
    """Within the block, `follow`'s activation registers with `aborts` as soon as its watchdog
    runs on the node (not before: an abort must find it there), until the block ends."""
    tokens: list[int] = []
    if aborts is not None:
        registry = aborts

        def launched() -> None:
            tokens.append(registry.add(node, lambda: abort_activation(follow)))

        follow.on_launch = launched
    try:
        yield
    finally:
        for token in tokens:
            if aborts is not None:
                aborts.remove(token)


def abort_activation(follow: Follower) -> str:
    """Abort the activation (the second Ctrl-C); the node's state in words."""
    final = abort(follow, "interrupted by the deployer (Ctrl-C twice)", seconds=ABORT_SECONDS)
    if final is None:
        return "the abort got no answer: the outcome is unknown (unconfirmed, it rolls back)"
    match final.status:
        case Status.ROLLED_BACK:
            return "aborted: rolled back to its previous system"
        case Status.FAILED:
            return f"aborted: {describe(final.reason)}"
        case Status.CONFIRMED | Status.DONE:
            return "the activation was over before the abort arrived: it runs the new system"
        case Status.ROLLBACK_FAILED:
            return "aborted: ROLLBACK FAILED, the node may be on neither system"
        case (
            Status.STARTING
            | Status.ACTIVATING
            | Status.WAITING
            | Status.CONFIRMING
            | Status.ROLLING_BACK
            | Status.LOST
            | Status.MISSING
            | Status.REBOOTED
        ):
            return f"aborted: the outcome is unknown (last status: {final})"
        case never:
            assert_never(never)
