"""`status` of one node: what it runs, whether it is the flake's build, when it was deployed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nixherd.errors import NixherdError
from nixherd.events import EventSink, Stage, StageFinished, StageStarted, discard
from nixherd.node.probe import NodeState, probe
from nixherd.run.ssh import Connection, Target


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's state, and how it compares with what the flake builds for it."""

    node: str
    reachable: bool
    state: NodeState | None = None
    expected: str | None = None  # the flake's toplevel for the node (None: not evaluated)
    error: str | None = None

    @property
    def matches(self) -> bool | None:
        """True when the node runs the flake's build; None when unknown."""
        if self.state is None or self.expected is None:
            return None
        return self.state.current == self.expected

    def to_data(self) -> dict[str, Any]:
        state = self.state
        return {
            "node": self.node,
            "reachable": self.reachable,
            "current": state.current if state else None,
            "profile": state.profile if state else None,
            "generation": state.generation if state else None,
            "generation_time": state.generation_time if state else None,
            "expected": self.expected,
            "matches": self.matches,
            "error": self.error,
        }


def read_status(
    target: Target, *, expected: str | None = None, emit: EventSink = discard
) -> NodeStatus:
    """Probe the node (one ssh round trip, no master); an unreachable node is a status too."""
    name = target.node
    emit(StageStarted(name, Stage.STATUS))
    started = time.monotonic()
    conn = Connection(target)
    try:
        state = probe(conn, multiplex=False, timeout=30)
        status = NodeStatus(name, True, state, expected)
    except NixherdError as exc:
        # The whole message: some span lines (a refused host key: its fingerprint, what to do).
        status = NodeStatus(name, False, None, expected, str(exc))
    finally:
        conn.close()
    emit(StageFinished(name, Stage.STATUS, time.monotonic() - started))
    return status
