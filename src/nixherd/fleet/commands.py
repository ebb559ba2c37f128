"""The fleet-wide commands: one operation per node over a selection, gathered into one report.

The per-node operations live in nixherd.node (one module each); here they are run over the
selected nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from nixherd.errors import NixherdError
from nixherd.events import EventSink, Outcome, Stage
from nixherd.fleet.fanout import report_per_node
from nixherd.fleet.plan import DeployNode, target_of
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport
from nixherd.node.activation import ActivationError, rollback
from nixherd.node.checks import checks_of
from nixherd.node.goal import Goal
from nixherd.run.ssh import Connection


def rollback_nodes(
    nodes: Sequence[DeployNode],
    *,
    ssh_config: str | None = None,
    parallel: int = 10,
    confirm_timeout: float = 30.0,
    timeout: float = 600.0,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> RunReport:
    """`nixherd rollback`: every node back to its previous generation, in parallel, checked."""
    by_name = {n.name: n for n in nodes}

    def work(name: str) -> NodeResult:
        node = by_name[name]
        started = time.monotonic()
        outcome, error, detail = Outcome.FAILED, None, None
        previous = store_path = None
        rolled_back = False
        reason: str | None = None
        try:
            checks = checks_of(name, getattr(node, "checks", None) or {})
            with Connection(target_of(node, ssh_config)) as conn:
                gens, result = rollback(
                    conn,
                    node=name,
                    checks=checks,
                    confirm_timeout=confirm_timeout,
                    timeout=timeout,
                    emit=emit,
                )
            previous = result.previous or gens.current
            number = gens.previous()
            store_path = gens.systems.get(number) if number is not None else None
            outcome, detail = Outcome.OK, f"now on generation {number}"
        except ActivationError as exc:
            previous = exc.previous
            rolled_back, reason = exc.rolled_back, exc.reason
            outcome = Outcome.ROLLED_BACK if exc.rolled_back else Outcome.FAILED
            error = ErrorInfo(exc.message, output="\n".join(exc.log[-20:]) or None)
        except NixherdError as exc:
            error = ErrorInfo.from_exception(exc)
        seconds = time.monotonic() - started
        return NodeResult(
            node=name,
            outcome=outcome,
            store_path=store_path,
            previous=previous,
            stages={Stage.ACTIVATE.value: seconds},
            error=error,
            rolled_back=rolled_back,
            rollback_reason=reason,
            detail=detail,
        )

    return report_per_node(
        [n.name for n in nodes],
        work,
        command="rollback",
        goal=Goal.SWITCH.value,
        options={"parallel": parallel, "confirm_timeout": confirm_timeout},
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    )
