"""The deploy pipeline: evaluate and build every selected node at once, then per node, in
parallel and independently: probe -> copy -> keys -> activate -> keys -> reboot.

Evaluation is one `nix eval` for all nodes and the build one `nix-store --realise` for all
derivations. After that each node moves on its own in a worker thread (a slow node never holds
the others), inside the waves of a staged rollout. A failing node never stops the others, except
through the rollout's failure budget. Nothing here prints: progress goes out as events, and the
result is a `RunReport`.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from nixherd.errors import CommandError, NixherdError
from nixherd.events import (
    RUN_WIDE,
    Event,
    EventSink,
    LogLine,
    NodeFinished,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
    discard,
)
from nixherd.fleet import evaluate as fleet
from nixherd.fleet.fanout import fan_out
from nixherd.fleet.plan import DeployNode, DeployOptions, target_of
from nixherd.fleet.report import TAIL_LINES, ErrorInfo, NodeResult, RunReport, order
from nixherd.fleet.rollout import WaveKind
from nixherd.node import keys as secrets
from nixherd.node import reboot as reboot_mod
from nixherd.node.checks import HealthCheck, parse_check
from nixherd.node.delivery import BuildOnTarget, Delivery, PushFromHere, System
from nixherd.node.diff import ClosureDiff, diff_nodes
from nixherd.node.goal import Goal
from nixherd.node.probe import NodeState, probe
from nixherd.run import nix
from nixherd.run.ssh import Connection

Evaluator = Callable[[str, Sequence[str]], Mapping[str, fleet.NodeEval]]
# Asked once the systems are built, before any node is touched: go ahead?
Confirm = Callable[[Mapping[str, "System"]], bool]


@dataclass
class Context:
    """What every node's pipeline shares during one run."""

    options: DeployOptions
    ssh_config: str | None
    base_dir: str
    emit: EventSink
    cancel: threading.Event
    delivery: Delivery
    systems: dict[str, System] = field(default_factory=dict)
    early: EarlyProbes | None = None


def delivery_for(options: DeployOptions) -> Delivery:
    """The copy strategy the options ask for."""
    if options.build_on_target:
        return BuildOnTarget(substitute_on_destination=options.substitute_on_destination)
    return PushFromHere(substitute_on_destination=options.substitute_on_destination)


@dataclass(frozen=True, slots=True)
class Probed:
    """A node connected to and probed while the build ran."""

    conn: Connection
    state: NodeState | None
    error: Exception | None
    seconds: float


class EarlyProbes:
    """Connect to and probe the first nodes while the deployer builds (one core builds, with
    Nix's default max-jobs): their ssh logins and round trips overlap the build instead of
    following it. Read-only: a probe touches nothing on the node.

    Only as many at once as there are cores: an ssh login costs ~0.1 s of CPU (OpenSSH 9's
    post-quantum key exchange), and twenty at once took the build's core too, so the build (which
    every node waits for) ran 1.9x slower. Probes still queued when the build is done are
    dropped: their nodes probe in their own pipelines, all in parallel.
    """

    def __init__(self, ctx: Context, nodes: Mapping[str, DeployNode]) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.futures: dict[str, cf.Future[Probed]] = {}

    def start(self, wanted: Mapping[str, str]) -> None:
        """Probe each node of `wanted` (name -> the store path it should get), a few at once."""
        if not wanted:
            return
        workers = min(len(wanted), max(2, os.cpu_count() or 1))
        pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nixherd-probe")
        for name, toplevel in wanted.items():
            self.futures[name] = pool.submit(self._probe, name, toplevel)
        pool.shutdown(wait=False)

    def _probe(self, name: str, toplevel: str) -> Probed:
        conn = Connection(target_of(self.nodes[name], self.ctx.ssh_config))
        self.ctx.emit(StageStarted(name, Stage.PROBE))
        started = time.monotonic()
        state: NodeState | None = None
        error: Exception | None = None
        try:
            state = probe(conn, toplevel, elevate=True)
        except Exception as exc:  # reported by the node's pipeline, as its own probe would be
            error = exc
        seconds = time.monotonic() - started
        self.ctx.emit(StageFinished(name, Stage.PROBE, seconds))
        return Probed(conn, state, error, seconds)

    def take(self, name: str) -> Probed | None:
        """The node's early probe (waiting for it if still running), once; None if it had none."""
        future = self.futures.pop(name, None)
        if future is None or future.cancel():
            return None
        return future.result()

    def close(self) -> None:
        """Close the connections of probes no pipeline took (failed build, stopped rollout)."""
        for name in list(self.futures):
            probed = self.take(name)
            if probed is not None:
                probed.conn.close()


class _Node:
    """One node's trip through the pipeline: its stages' timings and the events it emits."""

    def __init__(self, name: str, emit: EventSink) -> None:
        self.name = name
        self.emit = emit
        self.stages: dict[str, float] = {}
        self.store_path: str | None = None
        self.previous: str | None = None

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        self.emit(StageStarted(self.name, stage))
        started = time.monotonic()
        try:
            yield
        finally:
            self.sink(StageFinished(self.name, stage, time.monotonic() - started))

    def sink(self, event: Event) -> None:
        """An EventSink for the steps this node hands to other modules: keeps their timings."""
        if isinstance(event, StageFinished) and event.node == self.name:
            key = event.stage.value
            self.stages[key] = self.stages.get(key, 0.0) + event.seconds
        self.emit(event)

    def line(self, text: str) -> None:
        self.emit(LogLine(self.name, text))

    def finish(
        self,
        outcome: Outcome,
        *,
        error: ErrorInfo | None = None,
        detail: str | None = None,
        rolled_back: bool = False,
        rollback_reason: str | None = None,
    ) -> NodeResult:
        self.emit(
            NodeFinished(self.name, outcome, error.summary() if error is not None else detail)
        )
        return NodeResult(
            node=self.name,
            outcome=outcome,
            store_path=self.store_path,
            previous=self.previous,
            stages=dict(self.stages),
            error=error,
            rolled_back=rolled_back,
            rollback_reason=rollback_reason,
            detail=detail,
        )


def evaluate(
    names: Sequence[str],
    flake: str,
    *,
    emit: EventSink = discard,
    evaluator: Evaluator = fleet.eval_nodes,
) -> tuple[dict[str, fleet.NodeEval], float]:
    """Every node's system derivation, in ONE nix process; (per-node results, seconds)."""
    for name in names:
        emit(StageStarted(name, Stage.EVAL))
    started = time.monotonic()
    results = dict(evaluator(flake, names))
    seconds = time.monotonic() - started
    for name in names:
        emit(StageFinished(name, Stage.EVAL, seconds))
    return results, seconds


def build(
    systems: Mapping[str, System],
    *,
    emit: EventSink = discard,
    keep_result: bool = False,
    results_dir: str = "",
) -> tuple[dict[str, ErrorInfo], float]:
    """Build every system in ONE `nix-store --realise --keep-going`; (failures by node, seconds).

    One node's broken derivation fails that node only: the others' outputs still get built.
    """
    names = list(systems)
    if not names:
        return {}, 0.0
    for name in names:
        emit(StageStarted(name, Stage.BUILD))
    started = time.monotonic()
    failures: dict[str, ErrorInfo] = {}
    drvs = list(dict.fromkeys(systems[n].drv_path for n in names))
    try:
        nix.realise(drvs, on_line=lambda line: _build_line(line, emit))
    except CommandError as exc:
        missing = nix.invalid_paths([systems[n].out_path for n in names])
        info = ErrorInfo.from_exception(exc)
        for name in names:
            if systems[name].out_path in missing or exc.returncode is None:
                failures[name] = ErrorInfo(
                    message=f"build of {systems[name].drv_path} failed",
                    command=info.command,
                    returncode=info.returncode,
                    output=info.output,
                )
    if keep_result:
        for name in names:
            if name not in failures:
                nix.add_root(os.path.join(results_dir, name), systems[name].out_path)
    seconds = time.monotonic() - started
    for name in names:
        emit(StageFinished(name, Stage.BUILD, seconds))
    return failures, seconds


def _build_line(line: str, emit: EventSink) -> None:
    # The realised paths (stdout, merged here) are reported per node; nix-store's hint about
    # GC roots is noise for a deploy, which keeps roots only with --keep-result.
    if line.startswith("/nix/store/") or "did not specify '--add-root'" in line:
        return
    emit(LogLine(RUN_WIDE, line))


def deploy(
    nodes: Sequence[DeployNode],
    options: DeployOptions,
    *,
    ssh_config: str | None = None,
    base_dir: str = ".",
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
    evaluator: Evaluator = fleet.eval_nodes,
    command: str = "apply",
    confirm: Confirm | None = None,
) -> RunReport:
    """Deploy `nodes` as `options` say; every node ends with a result in the report.

    Raises only for what stops the whole run before any node is touched (a flake that does
    not evaluate). With `confirm`, it is asked after the build, before any node is touched,
    with every node's system; False leaves every node untouched (not attempted, "declined").
    A Ctrl-C starts no new node, lets those in flight finish, and returns a report marked
    interrupted.
    """
    cancel = cancel or threading.Event()
    started_at = time.time()
    # Before Nix copies the flake into the store: a plaintext key file inside it would go along.
    keyed = [cast(secrets.KeyedNode, n) for n in nodes if getattr(n, "keys", None)]
    secrets.refuse_store_exposed(keyed, base_dir=base_dir, flake=options.flake)
    ctx = Context(options, ssh_config, base_dir, emit, cancel, delivery_for(options))
    run = _Run(ctx, nodes, evaluator)
    try:
        run.prepare(confirm)
        run.go()
    finally:
        if ctx.early is not None:
            ctx.early.close()
    return RunReport(
        command=command,
        goal=options.goal.value,
        flake=options.flake,
        started_at=started_at,
        finished_at=time.time(),
        nodes=order(run.finish_rest(), run.names),
        interrupted=run.interrupted or cancel.is_set(),
        options=options.to_data(),
        stages=run.stages,
    )


class _Run:
    """One deploy's state between its steps: what each node ended as, and why the rest did not
    start (interrupted, declined, rollout stopped)."""

    def __init__(self, ctx: Context, nodes: Sequence[DeployNode], evaluator: Evaluator) -> None:
        self.ctx = ctx
        self.evaluator = evaluator
        self.names = [n.name for n in nodes]
        self.by_name = {n.name: n for n in nodes}
        self.results: dict[str, NodeResult] = {}
        self.stages: dict[str, float] = {}
        self.interrupted = False
        self.declined = False

    def fail(self, name: str, stage: Stage, error: ErrorInfo, seconds: float) -> None:
        node = _Node(name, self.ctx.emit)
        node.stages = dict(self.stages)
        node.stages[stage.value] = seconds
        self.results[name] = node.finish(Outcome.FAILED, error=error)

    def stop(self) -> None:
        self.interrupted = True
        self.ctx.cancel.set()

    def prepare(self, confirm: Confirm | None) -> None:
        """Evaluate and build (one nix process each), then ask `confirm` if given."""
        ctx, options = self.ctx, self.ctx.options
        try:
            evals, self.stages["eval"] = evaluate(
                self.names, options.flake, emit=ctx.emit, evaluator=self.evaluator
            )
            for name in self.names:
                ev = evals[name]
                if ev.ok and ev.drv_path and ev.out_path:
                    ctx.systems[name] = System(ev.drv_path, ev.out_path)
                else:
                    message = f"evaluation failed: {ev.error or 'no system'}"
                    self.fail(name, Stage.EVAL, ErrorInfo(message), self.stages["eval"])
            builds_here = options.goal is Goal.BUILD or ctx.delivery.builds_locally
            # Not before a confirmation: until it is given, no node is contacted by the deploy.
            if builds_here and options.goal is not Goal.BUILD and confirm is None:
                ctx.early = EarlyProbes(ctx, self.by_name)
                ctx.early.start(_first_started(options, self.names, ctx.systems))
            if builds_here:
                failures, self.stages["build"] = build(
                    ctx.systems,
                    emit=ctx.emit,
                    keep_result=options.keep_result,
                    results_dir=options.results_dir,
                )
                for name, error in failures.items():
                    self.fail(name, Stage.BUILD, error, self.stages["build"])
                    del ctx.systems[name]
            if confirm is not None and options.goal.copies and ctx.systems:
                self.declined = not confirm(dict(ctx.systems))
        except KeyboardInterrupt:
            self.stop()

    def go(self) -> None:
        """The nodes' pipelines (or, for the build goal, their results)."""
        ctx = self.ctx
        if self.interrupted or self.declined:
            return  # stopped before the nodes' pipelines: no node was touched
        if ctx.options.goal is Goal.BUILD:
            for name, system in ctx.systems.items():
                node = _Node(name, ctx.emit)
                node.store_path = system.out_path
                node.stages = dict(self.stages)
                self.results[name] = node.finish(Outcome.OK, detail="built")
            return
        try:
            if _roll_out(ctx, self.names, self.by_name, self.results, self.stages):
                self.stop()
        except KeyboardInterrupt:  # between two waves: no node is running
            self.stop()

    def finish_rest(self) -> list[NodeResult]:
        """Every node's result, the ones never started included."""
        for name in self.names:
            if name in self.results:
                continue
            node = _Node(name, self.ctx.emit)
            if name in self.ctx.systems:
                node.store_path = self.ctx.systems[name].out_path
            if self.declined:
                reason = "declined"
            elif self.interrupted or self.ctx.cancel.is_set():
                reason = "interrupted"
            else:
                reason = "rollout stopped"
            self.results[name] = node.finish(Outcome.NOT_ATTEMPTED, detail=reason)
        return list(self.results.values())


def _first_started(
    options: DeployOptions, names: Sequence[str], systems: Mapping[str, System]
) -> dict[str, str]:
    """The nodes the rollout starts first (its first wave, up to --parallel): name -> system."""
    waves = options.rollout.waves([n for n in names if n in systems])
    if not waves:
        return {}
    first = list(waves[0].nodes)
    if options.parallel > 0:
        first = first[: options.parallel]
    return {name: systems[name].out_path for name in first}


def _roll_out(
    ctx: Context,
    names: Sequence[str],
    by_name: Mapping[str, DeployNode],
    results: dict[str, NodeResult],
    run_stages: Mapping[str, float],
) -> bool:
    """Run the node pipelines wave by wave; True when interrupted."""
    rollout = ctx.options.rollout
    total = len(names)
    state = {"canary_failed": False, "stopped": False}

    def failures() -> int:
        return sum(1 for r in results.values() if r.failed)

    def work(name: str) -> NodeResult:
        return run_node(ctx, by_name[name], ctx.systems[name], run_stages)

    for wave in rollout.waves(names):
        # Nodes that already failed (evaluation, build) keep their result; a failed canary
        # stops the rollout wherever it failed.
        if wave.kind is WaveKind.CANARY and any(
            results[n].failed for n in wave.nodes if n in results
        ):
            state["canary_failed"] = True
        if state["stopped"] or ctx.cancel.is_set():
            break
        if rollout.should_stop(
            failures=failures(), total=total, canary_failed=state["canary_failed"]
        ):
            break
        todo = [n for n in wave.nodes if n not in results]

        def stop(_name: str, result: NodeResult, kind: WaveKind = wave.kind) -> bool:
            results[result.node] = result
            if kind is WaveKind.CANARY and result.failed:
                state["canary_failed"] = True
            return rollout.should_stop(
                failures=failures(), total=total, canary_failed=state["canary_failed"]
            )

        outcome = fan_out(todo, work, parallel=ctx.options.parallel, cancel=ctx.cancel, stop=stop)
        results.update(outcome.results)
        if outcome.interrupted:
            return True
        if outcome.not_started:
            state["stopped"] = True
        if wave.kind is WaveKind.CANARY and state["canary_failed"]:
            state["stopped"] = True
    return ctx.cancel.is_set()


def run_node(
    ctx: Context,
    node: DeployNode,
    system: System,
    run_stages: Mapping[str, float] | None = None,
) -> NodeResult:
    """One node's pipeline after the build; never raises, every failure becomes its result."""
    track = _Node(node.name, ctx.emit)
    track.stages.update(run_stages or {})
    track.store_path = system.out_path
    options = ctx.options
    goal = options.goal
    try:
        early = ctx.early.take(node.name) if ctx.early is not None else None
        conn = early.conn if early is not None else Connection(target_of(node, ctx.ssh_config))
        with conn:
            # dry-activate changes nothing on the node: no keys either.
            uploads = goal.activates and goal is not Goal.DRY_ACTIVATE
            prepared = _prepare_keys(ctx, node, track) if uploads else None
            if early is not None:
                track.stages[Stage.PROBE.value] = early.seconds
                if early.error is not None:
                    raise early.error
                assert early.state is not None
                state = early.state
            else:
                with track.stage(Stage.PROBE):
                    state = probe(conn, system.out_path, elevate=True)
            if goal.activates and state.in_flight and state.lock_toplevel == system.out_path:
                state = _await_other(ctx, conn, node, system, state, track)
            track.previous = state.current
            if state.up_to_date(goal, system.out_path):
                if prepared is not None:
                    _upload_keys(track, conn, prepared, None)
                return track.finish(Outcome.UP_TO_DATE, detail="already running its system")
            if not state.has_target:
                if ctx.cancel.is_set():
                    return track.finish(Outcome.INTERRUPTED, detail="interrupted before copy")
                with track.stage(Stage.COPY):
                    ctx.delivery.deliver(conn, system, on_line=track.line)
            else:
                track.line("closure already on the node: nothing to copy")
            if goal is Goal.PUSH:
                return track.finish(Outcome.OK, detail="pushed")
            if ctx.cancel.is_set():
                # Copied but untouched: the running system and the profile are as they were.
                return track.finish(Outcome.INTERRUPTED, detail="interrupted before activation")
            if prepared is not None:
                _upload_keys(track, conn, prepared, "pre-activation")
            outcome = _activate(ctx, conn, node, system, track)
            if outcome is not None:
                return outcome
            if prepared is not None:
                _upload_keys(track, conn, prepared, "post-activation")
            if options.reboot:
                with track.stage(Stage.REBOOT):
                    reboot_mod.reboot(
                        conn,
                        before=state.boot,
                        expect=system.out_path,
                        timeout=options.reboot_timeout,
                        on_line=track.line,
                    )
            return track.finish(Outcome.OK, detail=_done(goal))
    except NixherdError as exc:
        return track.finish(Outcome.FAILED, error=ErrorInfo.from_exception(exc))
    except Exception as exc:  # a bug must fail one node, not the run
        return track.finish(Outcome.FAILED, error=ErrorInfo.from_exception(exc))


def _await_other(
    ctx: Context, conn: Connection, node: DeployNode, system: System, state: NodeState, track: _Node
) -> NodeState:
    """Another run activates this very system on the node, unconfirmed yet: its outcome decides
    whether the node keeps it, so wait until it settles, then look again (a second round trip,
    only in this case). A run that activates another system fails on the lock instead."""
    from nixherd.node import activation

    activation_id = state.in_flight
    assert activation_id is not None
    holder = (state.lock or "").split()
    since = holder[2] if len(holder) > 2 else "?"
    by = holder[3] if len(holder) > 3 else "?"
    track.line(
        f"another run (by {by}, since {since}) is activating this system, unconfirmed: "
        "waiting for it to settle"
    )
    options = ctx.options
    budget = sum(c.budget for c in _checks(node))
    deadline = time.monotonic() + options.activation_timeout + options.confirm_timeout + budget + 60
    with track.stage(Stage.ACTIVATE):
        final = activation.await_settled(conn, activation_id, deadline=deadline, emit=track.sink)
    if final is None:
        raise activation.ActivationError(
            node.name,
            f"another run's activation of this system (by {by}, since {since}) did not settle",
        )
    track.line(f"the other run's activation ended: {final}")
    return probe(conn, system.out_path, elevate=True)


def _done(goal: Goal) -> str:
    match goal:
        case Goal.SWITCH:
            return "switched"
        case Goal.BOOT:
            return "set for next boot"
        case Goal.TEST:
            return "activated (profile unchanged)"
        case Goal.DRY_ACTIVATE:
            return "dry activation done"
        case Goal.PUSH | Goal.BUILD:
            return str(goal.value)


def _activate(
    ctx: Context, conn: Connection, node: DeployNode, system: System, track: _Node
) -> NodeResult | None:
    """Run H5's activation; a result when the node ends here (failed or rolled back)."""
    from nixherd.node import activation

    options = ctx.options
    act_options = activation.ActivationOptions(
        goal=options.goal,
        node=node.name,
        rollback=options.rollback,
        confirm_timeout=options.confirm_timeout,
        timeout=options.activation_timeout,
    )
    try:
        result = activation.activate(
            conn, system.out_path, act_options, checks=_checks(node), emit=track.sink
        )
    except activation.ActivationError as exc:
        if exc.previous is not None:
            track.previous = exc.previous
        outcome = Outcome.ROLLED_BACK if exc.rolled_back else Outcome.FAILED
        error = ErrorInfo(
            message=exc.message,
            output="\n".join(exc.log[-TAIL_LINES:]) or None,
        )
        return track.finish(
            outcome,
            error=error,
            rolled_back=exc.rolled_back,
            rollback_reason=(exc.reason or exc.message) if exc.rolled_back else None,
        )
    if result.previous is not None:
        track.previous = result.previous
    if result.rolled_back:
        return track.finish(
            Outcome.ROLLED_BACK,
            error=ErrorInfo(result.reason or "rolled back"),
            rolled_back=True,
            rollback_reason=result.reason,
        )
    return None


def _checks(node: DeployNode) -> tuple[HealthCheck, ...]:
    """The node's health checks from its inventory `checks` (already validated there)."""
    tables: Mapping[str, Mapping[str, Any]] = getattr(node, "checks", None) or {}
    found = []
    for name, table in tables.items():
        check, problems = parse_check(name, table)
        if check is None or problems:
            raise NixherdError(f"{node.name}: check {name}: {'; '.join(problems)}")
        found.append(check)
    return tuple(found)


def _prepare_keys(ctx: Context, node: DeployNode, track: _Node) -> secrets.PreparedKeys | None:
    """Read every key source of the node now, so a missing one fails it before it is touched."""
    if not ctx.options.keys or not getattr(node, "keys", None):
        return None
    keyed = cast(secrets.KeyedNode, node)
    with track.stage(Stage.KEYS):
        return secrets.prepare_keys(keyed, base_dir=ctx.base_dir)


def _upload_keys(
    track: _Node,
    conn: Connection,
    prepared: secrets.PreparedKeys,
    when: Literal["pre-activation", "post-activation"] | None,
) -> None:
    upload = None if when is None else secrets.Upload(when)
    secrets.upload_prepared(conn, prepared, upload, emit=track.sink)


def closure_diffs(
    nodes: Sequence[DeployNode],
    systems: Mapping[str, System],
    *,
    ssh_config: str | None = None,
    parallel: int = 10,
) -> dict[str, ClosureDiff | NixherdError]:
    """Per node, what its new system changes against the one it runs (for `apply --confirm`)."""
    cancel = threading.Event()
    toplevels = {name: system.out_path for name, system in systems.items()}
    diffs = diff_nodes(nodes, toplevels, ssh_config=ssh_config, parallel=parallel, cancel=cancel)
    if cancel.is_set():
        raise KeyboardInterrupt
    return diffs
