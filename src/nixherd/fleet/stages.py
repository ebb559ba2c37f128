"""One node's trip through a deploy, after the build: probe -> copy -> keys -> activate -> keys ->
reboot -> keys -> checks (`run_node`), with what every node's trip shares (`Context`) and the
probes started early, while the build runs (`EarlyProbes`). The wave scheduler that runs these
trips is fleet/pipeline.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from nixherd.errors import NixherdError
from nixherd.events import (
    Event,
    EventSink,
    LogLine,
    NodeFinished,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
)
from nixherd.fleet.plan import DeployNode, DeployOptions
from nixherd.fleet.report import TAIL_LINES, ErrorInfo, NodeResult
from nixherd.node import activation
from nixherd.node import keys as secrets
from nixherd.node import reboot as reboot_mod
from nixherd.node.abort import Aborts
from nixherd.node.checks import HealthCheck, run_checks, summary
from nixherd.node.delivery import BuildOnTarget, Delivered, Delivery, PushFromHere, System
from nixherd.node.goal import Goal
from nixherd.node.probe import NodeState, probe
from nixherd.run.ssh import Connection


@dataclass
class Context:
    """What every node's pipeline shares during one run."""

    options: DeployOptions
    base_dir: str
    emit: EventSink
    cancel: threading.Event
    delivery: Delivery
    systems: dict[str, System] = field(default_factory=dict)
    early: EarlyProbes | None = None
    # Per node, when it differs from `delivery`: through its binary cache (fleet/caches.py).
    deliveries: dict[str, Delivery] = field(default_factory=dict)

    def delivery_of(self, name: str) -> Delivery:
        return self.deliveries.get(name, self.delivery)

    # What the second Ctrl-C aborts: the activations in flight.
    aborts: Aborts = field(default_factory=Aborts)


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
        conn = Connection(self.nodes[name].target)
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


class Track:
    """One node's trip through the pipeline: its stages' timings and the events it emits."""

    def __init__(self, name: str, emit: EventSink) -> None:
        self.name = name
        self.emit = emit
        self.stages: dict[str, float] = {}
        self.store_path: str | None = None
        self.previous: str | None = None
        self.delivered: Delivered | None = None

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
            delivery=self.delivered,
        )


def run_node(
    ctx: Context,
    node: DeployNode,
    system: System,
    run_stages: Mapping[str, float] | None = None,
) -> NodeResult:
    """One node's pipeline after the build; never raises, every failure becomes its result."""
    track = Track(node.name, ctx.emit)
    track.stages.update(run_stages or {})
    track.store_path = system.out_path
    options = ctx.options
    goal = options.goal
    try:
        early = ctx.early.take(node.name) if ctx.early is not None else None
        conn = early.conn if early is not None else Connection(node.target)
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
            if state.up_to_date(goal, system.out_path, reboot=options.reboot):
                if prepared is not None:
                    _upload_keys(track, conn, prepared, None)
                return track.finish(Outcome.UP_TO_DATE, detail="already running its system")
            if options.reboot and state.up_to_date(goal, system.out_path):
                # An earlier run set it up (`apply boot`) but the node never booted it: the
                # reboot is all that is missing, nothing is copied or activated again.
                track.line(
                    f"its system is set up but it booted {state.booted or 'another system'}: "
                    "rebooting only"
                )
                return _reboot(ctx, conn, node, system, state, track, prepared)
            if not state.has_target:
                if ctx.cancel.is_set():
                    return track.finish(Outcome.INTERRUPTED, detail="interrupted before copy")
                with track.stage(Stage.COPY):
                    delivery = ctx.delivery_of(node.name)
                    track.delivered = delivery.deliver(conn, system, on_line=track.line)
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
                return _reboot(ctx, conn, node, system, state, track, prepared)
            return track.finish(Outcome.OK, detail=_done(goal))
    except NixherdError as exc:
        return track.finish(Outcome.FAILED, error=ErrorInfo.from_exception(exc))
    except Exception as exc:  # a bug must fail one node, not the run
        return track.finish(Outcome.FAILED, error=ErrorInfo.from_exception(exc))


def _reboot(
    ctx: Context,
    conn: Connection,
    node: DeployNode,
    system: System,
    state: NodeState,
    track: Track,
    prepared: secrets.PreparedKeys | None,
) -> NodeResult:
    """Reboot the node and wait (bounded) until it runs its system again; then, since a reboot
    empties /run, put every key back (both phases: the system is up), and run the health checks
    on the rebooted node. Only then is it ok. A check failing now fails the node, which keeps
    the system it booted: it was confirmed before the reboot, nothing is left to roll back to
    on its own (`nixherd rollback` is the way back)."""
    with track.stage(Stage.REBOOT):
        reboot_mod.reboot(
            conn,
            before=state.boot,
            expect=system.out_path,
            timeout=ctx.options.reboot_timeout,
            on_line=track.line,
        )
    if prepared is not None:
        _upload_keys(track, conn, prepared, None)
    results = run_checks(conn, health_checks(node), emit=track.sink)
    bad = summary(results)
    if bad:
        return track.finish(
            Outcome.FAILED,
            error=ErrorInfo(f"health check failed after the reboot ({bad}); the node keeps it"),
        )
    return track.finish(Outcome.OK, detail=f"{_done(ctx.options.goal)}, rebooted into it")


def _await_other(
    ctx: Context, conn: Connection, node: DeployNode, system: System, state: NodeState, track: Track
) -> NodeState:
    """Another run activates this very system on the node, unconfirmed yet: its outcome decides
    whether the node keeps it, so wait until it settles, then look again (a second round trip,
    only in this case). A run that activates another system fails on the lock instead."""
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
    budget = sum(c.budget for c in health_checks(node))
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
    ctx: Context, conn: Connection, node: DeployNode, system: System, track: Track
) -> NodeResult | None:
    """Run H5's activation; a result when the node ends here (failed or rolled back)."""
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
            conn,
            system.out_path,
            act_options,
            checks=health_checks(node),
            emit=track.sink,
            aborts=ctx.aborts,
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


def health_checks(node: DeployNode) -> tuple[HealthCheck, ...]:
    """The node's health checks, as the inventory typed them (none for a node without)."""
    return tuple(node.checks.values())


def _prepare_keys(ctx: Context, node: DeployNode, track: Track) -> secrets.PreparedKeys | None:
    """Read every key source of the node now, so a missing one fails it before it is touched."""
    if not ctx.options.keys or not node.keys:
        return None
    with track.stage(Stage.KEYS):
        return secrets.prepare_keys(node, base_dir=ctx.base_dir)


def _upload_keys(
    track: Track,
    conn: Connection,
    prepared: secrets.PreparedKeys,
    when: Literal["pre-activation", "post-activation"] | None,
) -> None:
    upload = None if when is None else secrets.Upload(when)
    secrets.upload_prepared(conn, prepared, upload, emit=track.sink)
