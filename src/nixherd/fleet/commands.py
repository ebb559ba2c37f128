"""The fleet-wide commands: one per-node operation (nixherd.node, one module each) run over the
selected nodes by the fleet runner, gathered into one report.

Each command hands the runner its per-node work; the runner owns the parallelism, the Ctrl-C
rule and the report. Commands whose output is a table of every node (status, keys, data, the
`apply --confirm` diff) raise KeyboardInterrupt when a Ctrl-C stopped the run, once the nodes in
flight are done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from nixherd.errors import NixherdError, UsageError
from nixherd.events import EventSink, Outcome, Stage, StageFinished, StageStarted, discard
from nixherd.fleet.plan import DeployNode
from nixherd.fleet.report import ErrorInfo, NodeResult, Output, RunReport
from nixherd.fleet.runner import FleetRun, reported, run_nodes
from nixherd.fleet.stages import health_checks
from nixherd.fleet.systems import build, evaluate, split
from nixherd.inventory.model import Node
from nixherd.node import data
from nixherd.node.abort import Aborts
from nixherd.node.activation import ActivationError, rollback
from nixherd.node.checks import failed, run_checks, summary
from nixherd.node.delivery import System
from nixherd.node.diff import ClosureDiff, node_diff
from nixherd.node.execute import SSH_FAILED, run_command
from nixherd.node.goal import Goal
from nixherd.node.keys import KeysResult, upload_keys
from nixherd.node.status import NodeStatus, read_status
from nixherd.run.nix import NO_FLAGS, NixFlags
from nixherd.run.ssh import Connection


def _timed(
    name: str, stage: Stage, step: Callable[[], NodeResult], *, emit: EventSink | None = None
) -> NodeResult:
    """One node's `step`, timed as `stage` (announced through `emit` when given): the NodeResult
    it returns, or a failed one holding the NixherdError it raised; either way with the stage's
    seconds."""
    if emit is not None:
        emit(StageStarted(name, stage))
    started = time.monotonic()
    try:
        result = step()
    except NixherdError as exc:
        result = NodeResult(name, Outcome.FAILED, error=ErrorInfo.from_exception(exc))
    seconds = time.monotonic() - started
    if emit is not None:
        emit(StageFinished(name, stage, seconds))
    return replace(result, stages={stage.value: seconds})


def exec_everywhere(
    nodes: Sequence[DeployNode],
    argv: Sequence[str],
    *,
    parallel: int = 10,
    elevate: bool = False,
    timeout: float | None = None,
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
) -> RunReport:
    """`nixherd exec`: run `argv` on every node; a result (and exit code) per node."""
    if not argv:
        raise UsageError("exec: no command given")
    command = tuple(argv)

    def work(node: DeployNode) -> NodeResult:
        def step() -> NodeResult:
            result = run_command(node.target, command, elevate=elevate, timeout=timeout, emit=emit)
            code = result.returncode
            output = Output.bounded(result.stdout)
            if code == 0:
                return NodeResult(
                    node.name, Outcome.OK, detail="exit 0", exit_code=0, output=output
                )
            tail = "\n".join(result.stdout.rstrip().splitlines()[-5:]) or None
            why = "ssh failed or the command exited with 255" if code == SSH_FAILED else None
            error = ErrorInfo(why or f"exited with {code}", returncode=code, output=tail)
            return NodeResult(
                node.name,
                Outcome.FAILED,
                error=error,
                detail=f"exit {code}",
                exit_code=code,
                output=output,
            )

        return _timed(node.name, Stage.EXEC, step, emit=emit)

    return run_nodes(
        nodes,
        work,
        command="exec",
        result=reported,
        options={"argv": list(command), "parallel": parallel, "elevate": elevate},
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    ).report


def status(
    nodes: Sequence[DeployNode],
    *,
    expected: Mapping[str, str | None] | None = None,
    parallel: int = 10,
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
) -> list[NodeStatus]:
    """`nixherd status`: probe every node (one ssh round trip each); rows in the nodes' order."""
    want = expected or {}

    def work(node: DeployNode) -> NodeStatus:
        return read_status(node.target, expected=want.get(node.name), emit=emit)

    def result(name: str, row: NodeStatus) -> NodeResult:
        if row.reachable:
            return NodeResult(name, Outcome.OK)
        return NodeResult(name, Outcome.FAILED, error=ErrorInfo(row.error or "unreachable"))

    run = run_nodes(
        nodes, work, command="status", result=result, parallel=parallel, emit=emit, cancel=cancel
    ).completed()
    rows = run.outcomes()
    return [
        row
        if isinstance(row, NodeStatus)
        else NodeStatus(name, False, None, want.get(name), row.render().splitlines()[0])
        for name, row in rows.items()
    ]


def check_health(
    nodes: Sequence[DeployNode],
    *,
    parallel: int = 10,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> RunReport:
    """`nixherd check-health`: every selected node's checks, in parallel; a result per node."""

    def work(node: DeployNode) -> NodeResult:
        def step() -> NodeResult:
            checks = health_checks(node)
            if not checks:
                return NodeResult(node.name, Outcome.OK, detail="no checks")
            with Connection(node.target) as conn:
                results = run_checks(conn, checks, emit=emit)
            bad = failed(results)
            detail = f"{len(results) - len(bad)}/{len(results)} checks passed"
            if bad:
                error = ErrorInfo(f"{detail}: {summary(results)}")
                return NodeResult(node.name, Outcome.FAILED, error=error, detail=detail)
            return NodeResult(node.name, Outcome.OK, detail=detail)

        return _timed(node.name, Stage.CHECK, step)

    return run_nodes(
        nodes,
        work,
        command="check-health",
        result=reported,
        options={"parallel": parallel},
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    ).report


def rollback_nodes(
    nodes: Sequence[DeployNode],
    *,
    parallel: int = 10,
    confirm_timeout: float = 30.0,
    timeout: float = 600.0,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> RunReport:
    """`nixherd rollback`: every node back to its previous generation, in parallel, checked.

    `timeout`: seconds each switch may take before it is stopped and undone."""
    aborts = Aborts()

    def work(node: DeployNode) -> NodeResult:
        def step() -> NodeResult:
            name = node.name
            try:
                checks = health_checks(node)
                with Connection(node.target) as conn:
                    gens, result = rollback(
                        conn,
                        node=name,
                        checks=checks,
                        confirm_timeout=confirm_timeout,
                        timeout=timeout,
                        emit=emit,
                        aborts=aborts,
                    )
            except ActivationError as exc:
                return NodeResult(
                    name,
                    Outcome.ROLLED_BACK if exc.rolled_back else Outcome.FAILED,
                    previous=exc.previous,
                    error=ErrorInfo(exc.message, output="\n".join(exc.log[-20:]) or None),
                    rolled_back=exc.rolled_back,
                    rollback_reason=exc.reason,
                )
            number = gens.previous()
            return NodeResult(
                name,
                Outcome.OK,
                store_path=gens.systems.get(number) if number is not None else None,
                previous=result.previous or gens.current,
                detail=f"now on generation {number}",
            )

        return _timed(node.name, Stage.ACTIVATE, step)

    return run_nodes(
        nodes,
        work,
        command="rollback",
        result=reported,
        goal=Goal.SWITCH.value,
        options={
            "parallel": parallel,
            "confirm_timeout": confirm_timeout,
            "activation_timeout": timeout,
        },
        parallel=parallel,
        emit=emit,
        cancel=cancel,
        aborts=aborts,
    ).report


def upload_keys_everywhere(
    nodes: Sequence[Node],
    *,
    base_dir: str,
    parallel: int = 10,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> FleetRun[KeysResult]:
    """`nixherd keys upload`: every key of every node that differs, without a rebuild."""

    def work(node: Node) -> KeysResult:
        with Connection(node.target) as conn:
            return upload_keys(conn, node, None, emit=emit, base_dir=base_dir)

    def result(name: str, r: KeysResult) -> NodeResult:
        return NodeResult(name, Outcome.OK if r.sent else Outcome.UP_TO_DATE)

    return run_nodes(
        nodes,
        work,
        command="keys upload",
        result=result,
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    ).completed()


def data_diff(
    nodes: Sequence[Node],
    *,
    parallel: int = 10,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> FleetRun[list[data.FileDiff]]:
    """`nixherd data diff`: per node, how each data file differs from its rendering."""

    def work(node: Node) -> list[data.FileDiff]:
        with Connection(node.target) as conn:
            return data.diff_node(conn, node, emit=emit)

    def result(name: str, diffs: list[data.FileDiff]) -> NodeResult:
        changes = any(d.changed for d in diffs)
        return NodeResult(name, Outcome.OK if changes else Outcome.UP_TO_DATE)

    return run_nodes(
        nodes, work, command="data diff", result=result, parallel=parallel, emit=emit, cancel=cancel
    ).completed()


def data_push(
    nodes: Sequence[Node],
    *,
    parallel: int = 10,
    emit: EventSink,
    cancel: threading.Event | None = None,
) -> FleetRun[data.DataResult]:
    """`nixherd data push`: write the data files that differ, then run their reloads."""

    def work(node: Node) -> data.DataResult:
        with Connection(node.target) as conn:
            return data.push_node(conn, node, emit=emit)

    def result(name: str, r: data.DataResult) -> NodeResult:
        return NodeResult(name, Outcome.OK if r.changed else Outcome.UP_TO_DATE)

    return run_nodes(
        nodes, work, command="data push", result=result, parallel=parallel, emit=emit, cancel=cancel
    ).completed()


def diff_nodes(
    nodes: Sequence[DeployNode],
    toplevels: Mapping[str, str],
    *,
    parallel: int = 10,
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
) -> FleetRun[ClosureDiff]:
    """Each node's closure diff against its built `toplevels[name]`, in parallel (the nodes of
    `nodes` that have one)."""

    def work(node: DeployNode) -> ClosureDiff:
        emit(StageStarted(node.name, Stage.STATUS))
        started = time.monotonic()
        try:
            with Connection(node.target) as conn:
                return node_diff(conn, toplevels[node.name])
        finally:
            emit(StageFinished(node.name, Stage.STATUS, time.monotonic() - started))

    def result(name: str, diff: ClosureDiff) -> NodeResult:
        return NodeResult(name, Outcome.UP_TO_DATE if diff.identical else Outcome.OK)

    return run_nodes(
        [n for n in nodes if n.name in toplevels],
        work,
        command="diff",
        result=result,
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    )


def diff_fleet(
    nodes: Sequence[DeployNode],
    flake: str,
    *,
    parallel: int = 10,
    emit: EventSink = discard,
    flags: NixFlags = NO_FLAGS,
) -> dict[str, ClosureDiff | NixherdError]:
    """`nixherd diff`: evaluate (one nix process) and build (one nix-store --realise) the nodes,
    then diff each. A node that does not evaluate or build gets its error in place of a diff."""
    names = [n.name for n in nodes]
    evals, _ = evaluate(names, flake, emit=emit, flags=flags)
    systems, unevaluated = split(names, evals)
    out: dict[str, ClosureDiff | NixherdError] = {
        name: NixherdError(error.message) for name, error in unevaluated.items()
    }
    failures, _ = build(systems, emit=emit, flags=flags)
    for name, error in failures.items():
        out[name] = NixherdError(error.message)
        del systems[name]
    toplevels = {name: system.out_path for name, system in systems.items()}
    out.update(diff_nodes(nodes, toplevels, parallel=parallel, emit=emit).outcomes())
    return {name: out[name] for name in names if name in out}


def closure_diffs(
    nodes: Sequence[DeployNode],
    systems: Mapping[str, System],
    *,
    parallel: int = 10,
) -> dict[str, ClosureDiff | NixherdError]:
    """Per node, what its new system changes against the one it runs (for `apply --confirm`)."""
    toplevels = {name: system.out_path for name, system in systems.items()}
    return diff_nodes(nodes, toplevels, parallel=parallel).completed().outcomes()
