"""The deploy pipeline: evaluate and build every selected node, then per node, in parallel and
independently: probe -> copy -> keys -> activate -> keys -> reboot.

Evaluation runs in bounded worker processes (`nix eval` of at most K nodes, N at once), and each
node's build starts as soon as it is evaluated (`nix-store --realise` of whatever is ready, one
at a time). After that each node moves on its own in a worker thread (a slow node never holds
the others), inside the waves of a staged rollout. A failing node never stops the others, except
through the rollout's failure budget. Nothing here prints: progress goes out as events, and the
result is a `RunReport`.

Here: the run and its wave scheduler. Evaluating and building are fleet/systems.py; one node's
trip after the build is fleet/stages.py; the nodes of a wave run on the fleet runner's engine.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from nixherd.events import EventSink, Outcome, discard
from nixherd.fleet import caches as cache_delivery
from nixherd.fleet.plan import DeployNode, DeployOptions
from nixherd.fleet.report import (
    ErrorInfo,
    EvaluationData,
    NodeResult,
    RunReport,
    SpanRecorder,
    order,
)
from nixherd.fleet.rollout import WaveKind
from nixherd.fleet.runner import abandoned_detail, fan_out
from nixherd.fleet.stages import Context, EarlyProbes, Track, delivery_for, run_node
from nixherd.fleet.systems import Evaluator, produce
from nixherd.inventory.cachecfg import Cache
from nixherd.node import keys as secrets
from nixherd.node.delivery import PushFromHere, System
from nixherd.node.goal import Goal

# Asked once the systems are built, before any node is touched: go ahead?
Confirm = Callable[[Mapping[str, "System"]], bool]


def deploy(
    nodes: Sequence[DeployNode],
    options: DeployOptions,
    *,
    base_dir: str = ".",
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
    evaluator: Evaluator | None = None,
    command: str = "apply",
    confirm: Confirm | None = None,
    caches: Mapping[str, Cache] | None = None,
) -> RunReport:
    """Deploy `nodes` as `options` say; every node ends with a result in the report.

    Raises only for what stops the whole run before any node is touched (a flake that does
    not evaluate). With `confirm`, it is asked after the build, before any node is touched,
    with every node's system; False leaves every node untouched (not attempted, "declined").
    A Ctrl-C starts no new node, lets those in flight finish, and returns a report marked
    interrupted. `caches` (node name -> its binary cache) sends those nodes' systems through
    their cache: pushed once after the build (and the confirmation), substituted by each node.
    """
    cancel = cancel or threading.Event()
    started_at = time.time()
    # Every stage event passes through it: the report's timeline (spans) on the run's clock.
    emit = spans = SpanRecorder(emit)
    # Before Nix copies the flake into the store: a plaintext key file inside it would go along.
    keyed = [n for n in nodes if n.keys]
    secrets.refuse_store_exposed(keyed, base_dir=base_dir, flake=options.flake)
    # Building on the target leaves nothing here to push: the cache is not used then.
    caches = {} if options.build_on_target or not options.goal.copies else dict(caches or {})
    cache_delivery.refuse_exposed(caches, flake_dir=_local_flake_dir(options.flake, base_dir))
    ctx = Context(options, base_dir, emit, cancel, delivery_for(options))
    run = _Run(ctx, nodes, evaluator, caches)
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
        evaluation=run.evaluation,
        spans=spans.spans(),
    )


class _Run:
    """One deploy's state between its steps: what each node ended as, and why the rest did not
    start (interrupted, declined, rollout stopped)."""

    def __init__(
        self,
        ctx: Context,
        nodes: Sequence[DeployNode],
        evaluator: Evaluator | None,
        caches: Mapping[str, Cache],
    ) -> None:
        self.ctx = ctx
        self.caches = caches
        self.evaluator = evaluator
        self.names = [n.name for n in nodes]
        self.by_name = {n.name: n for n in nodes}
        self.results: dict[str, NodeResult] = {}
        self.stages: dict[str, float] = {}  # run-wide
        self.node_stages: dict[str, dict[str, float]] = {}  # each node's eval and build
        self.evaluation: EvaluationData | None = None
        self.interrupted = False
        self.declined = False

    def fail(self, name: str, error: ErrorInfo) -> None:
        node = Track(name, self.ctx.emit)
        node.stages = dict(self.node_stages.get(name, {}))
        self.results[name] = node.finish(Outcome.FAILED, error=error)

    def stop(self) -> None:
        self.interrupted = True
        self.ctx.cancel.set()

    def prepare(self, confirm: Confirm | None) -> None:
        """Evaluate and build (each node built as soon as it is evaluated), then ask `confirm`
        if given."""
        ctx, options = self.ctx, self.ctx.options
        builds_here = options.goal is Goal.BUILD or ctx.delivery.builds_locally
        # Not before a confirmation: until it is given, no node is contacted by the deploy.
        early = builds_here and options.goal is not Goal.BUILD and confirm is None

        def evaluated(systems: Mapping[str, System]) -> None:
            # The first wave's probes overlap the builds still to come.
            ctx.systems.update(systems)
            ctx.early = EarlyProbes(ctx, self.by_name)
            ctx.early.start(_first_started(options, self.names, ctx.systems))

        try:
            made = produce(
                self.names,
                options.flake,
                emit=ctx.emit,
                evaluator=self.evaluator,
                flags=options.nix,
                limits=options.evaluation,
                build_here=builds_here,
                keep_result=options.keep_result,
                results_dir=options.results_dir,
                on_evaluated=evaluated if early else None,
            )
            self.stages.update(made.stages)
            self.node_stages = made.node_stages
            self.evaluation = made.evaluation.to_data() if made.evaluation else None
            ctx.systems.clear()
            ctx.systems.update(made.systems)
            for name, (_stage, error) in made.failures.items():
                self.fail(name, error)
            if confirm is not None and options.goal.copies and ctx.systems:
                self.declined = not confirm(dict(ctx.systems))
            if self.caches and ctx.systems and not self.declined:
                fallback = ctx.delivery
                assert isinstance(fallback, PushFromHere)  # not building on the target
                deliveries, self.stages["push"] = cache_delivery.push(
                    self.caches, ctx.systems, fallback=fallback, emit=ctx.emit
                )
                ctx.deliveries.update(deliveries)
        except KeyboardInterrupt:
            self.stop()

    def go(self) -> None:
        """The nodes' pipelines (or, for the build goal, their results)."""
        ctx = self.ctx
        if self.interrupted or self.declined:
            return  # stopped before the nodes' pipelines: no node was touched
        if ctx.options.goal is Goal.BUILD:
            for name, system in ctx.systems.items():
                node = Track(name, ctx.emit)
                node.store_path = system.out_path
                node.stages = dict(self.node_stages.get(name, {}))
                self.results[name] = node.finish(Outcome.OK, detail="built")
            return
        try:
            if _roll_out(ctx, self.names, self.by_name, self.results, self.node_stages):
                self.stop()
        except KeyboardInterrupt:  # between two waves: no node is running
            self.stop()

    def finish_rest(self) -> list[NodeResult]:
        """Every node's result, the ones never started included."""
        for name in self.names:
            if name in self.results:
                continue
            node = Track(name, self.ctx.emit)
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


def _local_flake_dir(flake: str, base_dir: str) -> str | None:
    """The directory of a local flake reference (`.`, a path, `path:DIR`), else None."""
    ref = flake.split("#", 1)[0].split("?", 1)[0]
    ref = ref.removeprefix("path:").removeprefix("git+file://")
    if not ref or "://" in ref or (":" in ref and not ref.startswith(("/", "."))):
        return None
    return os.path.join(base_dir, ref)


def _abandoned(ctx: Context, name: str) -> NodeResult:
    """A node given up on in flight after the second Ctrl-C: what its abort found, or, when it
    never activated, that its running system is unchanged."""
    node = Track(name, ctx.emit)
    if name in ctx.systems:
        node.store_path = ctx.systems[name].out_path
    if ctx.aborts.registered(name):
        detail = abandoned_detail(name, ctx.aborts)
    else:
        detail = "abandoned before activating (second Ctrl-C): its running system is unchanged"
    return node.finish(Outcome.INTERRUPTED, detail=detail)


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
    node_stages: Mapping[str, Mapping[str, float]],
) -> bool:
    """Run the node pipelines wave by wave; True when interrupted."""
    rollout = ctx.options.rollout
    total = len(names)
    state = {"canary_failed": False, "stopped": False}

    def failures() -> int:
        return sum(1 for r in results.values() if r.failed)

    def work(name: str) -> NodeResult:
        return run_node(ctx, by_name[name], ctx.systems[name], node_stages.get(name))

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

        outcome = fan_out(
            todo,
            work,
            parallel=ctx.options.parallel,
            cancel=ctx.cancel,
            stop=stop,
            emit=ctx.emit,
            aborts=ctx.aborts,
        )
        results.update(outcome.results)
        for name in outcome.abandoned:
            results[name] = _abandoned(ctx, name)
        if outcome.interrupted:
            return True
        if outcome.not_started:
            state["stopped"] = True
        if wave.kind is WaveKind.CANARY and state["canary_failed"]:
            state["stopped"] = True
    return ctx.cancel.is_set()
