"""Running one small operation per node (keys, data) over a selection: connect, fan out, isolate.

Each node gets its own ControlMaster connection, closed when its work is done. A node's failure
(any NixherdError) is caught, reported as a NodeFinished event and returned in its place, so the
other nodes go on; the caller decides the exit code once every node is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from nixherd.errors import NixherdError
from nixherd.events import EventSink, NodeFinished, Outcome
from nixherd.fleet.fanout import fan_out
from nixherd.fleet.plan import DeployNode, target_of
from nixherd.run.ssh import Connection

R = TypeVar("R")


N = TypeVar("N", bound=DeployNode)


def on_nodes(
    nodes: Sequence[N],
    work: Callable[[Connection, N], R],
    *,
    ssh_config: str | None,
    outcome: Callable[[R], Outcome],
    emit: EventSink,
    parallel: int = 10,
    cancel: threading.Event | None = None,
) -> Mapping[str, R | NixherdError]:
    """`work(conn, node)` for every node, `parallel` at once; a failing node yields its error.

    `conn` is the node's own ControlMaster connection, closed when its work is done. Nodes never
    started (Ctrl-C) are left out of the result; a KeyboardInterrupt is re-raised once the nodes
    already running are done.
    """
    by_name = {node.name: node for node in nodes}
    names = list(by_name)

    def guarded(name: str) -> R | NixherdError:
        try:
            with Connection(target_of(by_name[name], ssh_config)) as conn:
                result = work(conn, by_name[name])
        except NixherdError as exc:
            emit(NodeFinished(name, Outcome.FAILED, exc.render()))
            return exc
        emit(NodeFinished(name, outcome(result)))
        return result

    run = fan_out(names, guarded, parallel=parallel, cancel=cancel or threading.Event())
    if run.interrupted:
        for name in run.not_started:
            emit(NodeFinished(name, Outcome.NOT_ATTEMPTED))
        raise KeyboardInterrupt
    return {name: run.results[name] for name in names if name in run.results}
