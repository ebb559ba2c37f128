"""Activating a system on one node: lock, profile, detached switch, health checks, magic rollback.

The work on the target is done by a small POSIX sh watchdog (`nixherd/resources/watchdog.sh`), sent
on stdin with each activation: nothing is installed on the target. Per activation:

1. `start` (over the node's ControlMaster) takes the node's lock (`/run/nixherd/lock`; a second
   deploy fails at once, naming the holder), records the running system and profile generation,
   and launches the watchdog detached (`systemd-run` where systemd runs, else `setsid`), so that an
   ssh drop or a network restart cannot kill a half-done switch.
2. The watchdog runs `switch-to-configuration` and records the result; `start` itself goes on
   streaming its log and status (one round trip per node), and if that stream is cut, nixherd
   follows again with `wait` over the ControlMaster. Nothing on the target polls: every step
   blocks on a child or on a FIFO (see the script's header).
3. With magic rollback (switch and test, on by default), a switch is only tried out first
   (`switch-to-configuration test`: the system profile and the boot loader's default stay on the
   previous generation) and the watchdog waits for a confirmation. nixherd runs the health
   checks and confirms over a NEW ssh connection, which proves that a fresh login still works;
   only then does the watchdog set the profile and run `switch-to-configuration boot`, so an
   unconfirmed system never survives a reboot as the one that boots. No confirmation in time,
   a failed activation, or a failed check (nixherd sends an abort) -> the watchdog re-activates
   the previous system on its own. Without rollback, and for `boot`, the profile is set first,
   as NixOS does.

Every status the watchdog reports carries the node's boot identity (boot id and pid 1's start
time): a status from another boot, or an activation whose state is gone, ends the wait at once,
and the error says what the node runs now. A run that finds an unconfirmed activation of the
same system in flight (another run's, or one whose deployer died) never calls the node up to
date: it waits for that activation to settle, then looks again.

Ctrl-C: the keyboard never reaches the target's processes. If nixherd is interrupted while it
waits on an activation in its main thread, it finishes that node first (checks, confirmation:
a node that activated and passed its checks is confirmed, so it is not rolled back for nothing)
and then re-raises; a second Ctrl-C stops waiting, and the target, unconfirmed, rolls itself back
after the confirm timeout. Either way the lock is released by the watchdog when it is done.
In worker threads (the fleet runner's) no KeyboardInterrupt arrives: there the second Ctrl-C
reaches an activation through `aborts` (nixherd.node.abort), where it registers once its
watchdog runs: the abort stops a switch still running and rolls the node back, and the
activation's own following sees it settle.

This module is the flow. The calls to the watchdog (start, wait, confirm, abort) are `watchdog`'s,
and the words it answers with are `protocol`'s `Status`, matched here exhaustively.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, assert_never

from nixherd.errors import NixherdError
from nixherd.events import EventSink, LogLine, Stage, StageFinished, StageStarted
from nixherd.node.abort import Aborts, abortable
from nixherd.node.checks import CheckResult, HealthCheck, run_checks, summary
from nixherd.node.generations import Generations, generations, parse_generations
from nixherd.node.goal import Goal
from nixherd.node.probe import NodeState, probe
from nixherd.node.protocol import (
    UNIT_FAILED_EXIT,
    UNSAFE_EXIT,
    Marker,
    Status,
    describe,
    unconfirmed,
)
from nixherd.node.watchdog import (
    PROFILE,
    STATE_DIR,
    STORE_PATH,
    ActivationError,
    ActivationOptions,
    Follower,
    LockHeldError,
    abort,
    await_settled,
    confirm,
    deployer_identity,
    new_activation_id,
    start,
    start_argv,
    watchdog_argv,
    watchdog_script,
)
from nixherd.run.ssh import Connection

# What callers and tests reach through this module: the activation's vocabulary lives in
# `watchdog` (the client) and `protocol` (the words), the flow here.
__all__ = [
    "PROFILE",
    "STATE_DIR",
    "UNSAFE_EXIT",
    "ActivationError",
    "ActivationOptions",
    "ActivationResult",
    "Generations",
    "LockHeldError",
    "activate",
    "await_settled",
    "deployer_identity",
    "generations",
    "new_activation_id",
    "parse_generations",
    "rollback",
    "start_argv",
    "watchdog_argv",
    "watchdog_script",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """A settled, successful activation."""

    previous: str | None
    rolled_back: bool = False
    reason: str | None = None
    status: Status = Status.DONE
    checks: tuple[CheckResult, ...] = ()
    log: tuple[str, ...] = field(default=(), repr=False)


@contextlib.contextmanager
def _stage(emit: EventSink, node: str, stage: Stage) -> Iterator[None]:
    emit(StageStarted(node, stage))
    started = time.monotonic()
    try:
        yield
    finally:
        emit(StageFinished(node, stage, time.monotonic() - started))


def activate(
    conn: Connection,
    toplevel: str,
    options: ActivationOptions,
    *,
    checks: Sequence[HealthCheck] = (),
    emit: EventSink,
    aborts: Aborts | None = None,
) -> ActivationResult:
    """Activate `toplevel` on the node behind `conn` per `options`; raise ActivationError if not.

    With `aborts`, the activation can be aborted (the second Ctrl-C) from the moment its
    watchdog runs until it settles."""
    interrupted: list[KeyboardInterrupt] = []
    follow = Follower(conn, new_activation_id(), emit)
    try:
        with abortable(aborts, follow, options.node):
            return _activate(follow, toplevel, options, checks, interrupted)
    finally:
        if interrupted:
            raise interrupted[0]


def _activate(
    follow: Follower,
    toplevel: str,
    options: ActivationOptions,
    checks: Sequence[HealthCheck],
    interrupted: list[KeyboardInterrupt],
) -> ActivationResult:
    conn, emit, node = follow.conn, follow.emit, options.node
    if not options.goal.activates:
        raise NixherdError(f"{node}: goal {options.goal.value} does not activate")
    if not STORE_PATH.match(toplevel):
        raise NixherdError(f"{node}: not a store path: {toplevel!r}")
    # Checks run while the watchdog waits: its window covers them on top of the confirm timeout.
    run_health = options.goal.changes_running_system
    budget = sum(c.budget for c in checks) if run_health else 0.0
    confirm_window = options.confirm_timeout + budget

    with _stage(emit, node, Stage.ACTIVATE):
        previous, status = start(follow, toplevel, options, confirm_window)
        if status is None:
            status = _guard(
                interrupted,
                lambda: follow.wait(time.monotonic() + options.timeout + 30),
            )
    if status is None:
        if follow.last is None:
            message = (
                "lost contact during activation; the node finishes (and, unconfirmed, rolls "
                "back) on its own"
            )
        else:
            message = f"activation did not settle in time (last status: {follow.last})"
        raise ActivationError(node, message, previous=previous, log=follow.log)
    _check_vanished(follow, status, previous, ())
    waiting_since = time.monotonic()
    if status.status is not Status.WAITING:
        return _settle(node, status, previous, follow.log, ())

    results: tuple[CheckResult, ...] = ()
    if run_health and checks:
        results = _guard(interrupted, lambda: run_checks(conn, checks, emit=emit))
        bad = summary(results)
        if bad:
            emit(LogLine(node, f"health checks failed: {bad}; rolling back"))
            abort(follow, f"health check failed: {bad}")
            # Also brings the rollback's log along.
            final = _guard(
                interrupted,
                lambda: follow.wait(
                    waiting_since + confirm_window + options.timeout + 30,
                    until_settled=True,
                ),
            )
            _check_vanished(follow, final, previous, results)
            raise _failure(
                node,
                final,
                previous,
                follow.log,
                results,
                why=f"health check failed ({bad})",
            )

    with _stage(emit, node, Stage.CONFIRM):
        final = _guard(
            interrupted,
            lambda: confirm(follow, waiting_since + confirm_window, emit),
        )
        if final is None or not _answers_confirm(final.status):
            # No confirmation got through: the node rolls back on its own; find out how it ended.
            final = _guard(
                interrupted,
                lambda: follow.wait(
                    waiting_since + confirm_window + options.timeout + 30, until_settled=True
                ),
            )
    if final is not None and final.status is Status.CONFIRMED:
        return ActivationResult(previous, False, None, final.status, results, tuple(follow.log))
    _check_vanished(follow, final, previous, results)
    why = unconfirmed(final, follow.login_failure, follow.confirm_sent) if final else None
    raise _failure(node, final, previous, follow.log, results, why=why)


def _answers_confirm(status: Status) -> bool:
    """Whether a status ends a confirmation: confirmed, or the activation is gone."""
    match status:
        case Status.CONFIRMED | Status.REBOOTED | Status.MISSING:
            return True
        case (
            Status.STARTING
            | Status.ACTIVATING
            | Status.WAITING
            | Status.CONFIRMING
            | Status.ROLLING_BACK
            | Status.DONE
            | Status.FAILED
            | Status.ROLLED_BACK
            | Status.ROLLBACK_FAILED
            | Status.LOST
        ):
            return False
        case never:
            assert_never(never)


# How long a node that rebooted under an activation gets to answer again: on a systemd host the
# reboot is an orderly shutdown and a boot, seconds during which no login works.
REBOOT_ANSWER_TIMEOUT = 60.0


def _state_after_reboot(follow: Follower) -> NodeState | None:
    """The node's state once it answers again, over fresh connections (the shared master died
    with the old boot); None if it does not answer in REBOOT_ANSWER_TIMEOUT."""
    deadline = time.monotonic() + REBOOT_ANSWER_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        try:
            return probe(follow.conn, multiplex=False, timeout=max(1.0, min(remaining, 30)))
        except NixherdError:
            if remaining <= 0:
                return None
            time.sleep(0.5)


def _check_vanished(
    follow: Follower, status: Marker | None, previous: str | None, results: Sequence[CheckResult]
) -> None:
    """Raise if the node rebooted (or lost the activation's state) before it settled: the
    activation is over then, and what the node runs now is the news."""
    if status is None:
        return
    rebooted = "the node rebooted before the activation was settled"
    state: NodeState | None = None
    match status.status:
        case Status.REBOOTED:
            what, why_back = rebooted, f"{rebooted} (it booted its previous system)"
        case Status.MISSING:
            what = why_back = "the activation's state vanished on the node"
        case Status.LOST:
            # A watchdog that died unsettled: on a systemd host, a shutdown stops its unit
            # before the reboot, so "lost" is what a follower says first. A new boot decides.
            if follow.boot is None:
                return
            state = _state_after_reboot(follow)
            if state is None or state.boot == follow.boot:
                return
            what, why_back = rebooted, f"{rebooted} (it booted its previous system)"
        case (
            Status.STARTING
            | Status.ACTIVATING
            | Status.WAITING
            | Status.CONFIRMING
            | Status.ROLLING_BACK
            | Status.DONE
            | Status.CONFIRMED
            | Status.FAILED
            | Status.ROLLED_BACK
            | Status.ROLLBACK_FAILED
        ):
            return
        case never:
            assert_never(never)
    node = follow.conn.target.node
    if state is None:
        state = _state_after_reboot(follow)
    now = state.current if state is not None else None
    runs = now or "no system"
    if previous is not None and now == previous:
        raise ActivationError(
            node,
            f"{what}; it runs {runs}, its previous system",
            rolled_back=True,
            previous=previous,
            reason=why_back,
            log=follow.log,
            checks=results,
        )
    raise ActivationError(
        node,
        f"{what}; it runs {runs}",
        previous=previous,
        reason=what,
        log=follow.log,
        checks=results,
    )


def _guard(interrupted: list[KeyboardInterrupt], step: Callable[[], T]) -> T:
    """Run `step`; on a first Ctrl-C, remember it and run the step again to finish the node."""
    while True:
        try:
            return step()
        except KeyboardInterrupt as exc:
            if interrupted:
                raise
            interrupted.append(exc)


def _settle(
    node: str,
    status: Marker,
    previous: str | None,
    log: Sequence[str],
    results: tuple[CheckResult, ...],
) -> ActivationResult:
    match status.status:
        case Status.DONE | Status.CONFIRMED:
            return ActivationResult(previous, False, None, status.status, results, tuple(log))
        case (
            Status.STARTING
            | Status.ACTIVATING
            | Status.WAITING
            | Status.CONFIRMING
            | Status.ROLLING_BACK
            | Status.FAILED
            | Status.ROLLED_BACK
            | Status.ROLLBACK_FAILED
            | Status.LOST
            | Status.MISSING
            | Status.REBOOTED
        ):
            raise _failure(node, status, previous, log, results, why=None)
        case never:
            assert_never(never)


def _failure(
    node: str,
    status: Marker | None,
    previous: str | None,
    log: Sequence[str],
    results: Sequence[CheckResult],
    *,
    why: str | None,
) -> ActivationError:
    cause = why or describe(status.reason if status else "", log)
    unknown = ActivationError(
        node,
        f"{cause or 'activation'}: the outcome is unknown (last status: {status or 'unknown'}); "
        "an unconfirmed node rolls back on its own",
        previous=previous,
        reason=cause,
        log=log,
        checks=results,
    )
    if status is None:
        return unknown
    match status.status:
        case Status.ROLLED_BACK:
            return ActivationError(
                node,
                f"{cause}; rolled back to {previous}",
                rolled_back=True,
                previous=previous,
                reason=cause,
                log=log,
                checks=results,
            )
        case Status.ROLLBACK_FAILED:
            return ActivationError(
                node,
                f"{cause}; ROLLBACK FAILED, the node may be on neither system",
                previous=previous,
                reason=cause,
                log=log,
                checks=results,
            )
        case Status.FAILED:
            if status.reason == f"activation-exit-{UNIT_FAILED_EXIT}":
                # The switch went through: no rollback was asked for, so the node runs it.
                cause = f"{cause}; the node keeps the new system (no rollback asked for)"
            return ActivationError(
                node, cause, previous=previous, reason=cause, log=log, checks=results
            )
        case Status.MISSING:
            return ActivationError(
                node,
                "the activation's state vanished on the node (rebooted?)",
                previous=previous,
                log=log,
                checks=results,
            )
        case (
            Status.STARTING
            | Status.ACTIVATING
            | Status.WAITING
            | Status.CONFIRMING
            | Status.ROLLING_BACK
            | Status.DONE
            | Status.CONFIRMED
            | Status.LOST
            | Status.REBOOTED
        ):
            return unknown
        case never:
            assert_never(never)


# --- rollback: back to the generation before the current one ---


def rollback(
    conn: Connection,
    *,
    node: str,
    checks: Sequence[HealthCheck] = (),
    confirm_timeout: float = 30.0,
    timeout: float = 600.0,
    emit: EventSink,
    aborts: Aborts | None = None,
) -> tuple[Generations, ActivationResult]:
    """Move the node's profile to the previous generation and switch to it, with magic rollback.

    If the older system fails its checks or cuts the deployer off, the watchdog returns the
    node to the generation it ran before (the rollback is itself rolled back).
    """
    gens = generations(conn)
    number = gens.previous()
    if number is None:
        raise ActivationError(node, "no previous generation to roll back to")
    emit(LogLine(node, f"rolling back to generation {number} ({gens.systems[number]})"))
    options = ActivationOptions(
        Goal.SWITCH,
        node,
        rollback=True,
        confirm_timeout=confirm_timeout,
        timeout=timeout,
        generation=number,
    )
    return gens, activate(
        conn, gens.systems[number], options, checks=checks, emit=emit, aborts=aborts
    )
