"""`status`: what each node runs, whether it is the flake's build, when it was deployed."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.errors import NixherdError
from nixherd.events import (
    EventSink,
    NodeFinished,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
    discard,
)
from nixherd.fleet.fanout import fan_out
from nixherd.fleet.plan import DeployNode, target_of
from nixherd.node.probe import NodeState, probe
from nixherd.run.ssh import Connection


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


def node_status(
    nodes: Sequence[DeployNode],
    *,
    ssh_config: str | None = None,
    expected: Mapping[str, str | None] | None = None,
    parallel: int = 10,
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
) -> list[NodeStatus]:
    """Probe every node (one ssh round trip each, in parallel); results in the nodes' order."""
    by_name = {n.name: n for n in nodes}
    want = expected or {}

    def work(name: str) -> NodeStatus:
        node = by_name[name]
        emit(StageStarted(name, Stage.STATUS))
        started = time.monotonic()
        target = target_of(node, ssh_config)
        conn = Connection(target)
        try:
            state = probe(conn, multiplex=False, timeout=30)
            status = NodeStatus(name, True, state, want.get(name))
        except NixherdError as exc:
            status = NodeStatus(name, False, None, want.get(name), str(exc).splitlines()[0])
        finally:
            conn.close()
        emit(StageFinished(name, Stage.STATUS, time.monotonic() - started))
        emit(NodeFinished(name, Outcome.OK if status.reachable else Outcome.FAILED, status.error))
        return status

    names = [n.name for n in nodes]
    run = fan_out(names, work, parallel=parallel, cancel=cancel or threading.Event())
    if run.interrupted:
        raise KeyboardInterrupt
    return [run.results[n] for n in names]
