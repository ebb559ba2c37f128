"""The fleet's systems: every node's evaluated (fleet/evaluate.py: bounded worker processes),
and built as soon as it is evaluated.

Used by the deploy pipeline and by the fleet-wide diff (fleet/commands.py): neither needs the
other to get the systems.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nixherd.errors import CommandError
from nixherd.events import RUN_WIDE, EventSink, LogLine, Stage, StageFinished, StageStarted, discard
from nixherd.fleet import evaluate as fleet
from nixherd.fleet.report import ErrorInfo
from nixherd.node.delivery import System
from nixherd.run import nix

# Stands in for the worker processes in tests: every node's result at once, in one call.
Evaluator = Callable[[str, Sequence[str]], Mapping[str, fleet.NodeEval]]


def evaluate(
    names: Sequence[str],
    flake: str,
    *,
    emit: EventSink = discard,
    evaluator: Evaluator | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
    limits: fleet.EvalLimits = fleet.EvalLimits(),  # noqa: B008 (frozen)
) -> tuple[dict[str, fleet.NodeEval], float]:
    """Every node's system derivation, nothing built; (per-node results, seconds)."""
    made = produce(names, flake, emit=emit, evaluator=evaluator, flags=flags, limits=limits)
    return made.evals, made.stages["eval"]


@dataclass
class Produced:
    """What evaluating (and building) the nodes gave: their systems, why the others have none,
    how long each node spent in each stage, and what the evaluation cost."""

    evals: dict[str, fleet.NodeEval] = field(default_factory=dict)
    systems: dict[str, System] = field(default_factory=dict)  # evaluated, built when asked
    failures: dict[str, tuple[Stage, ErrorInfo]] = field(default_factory=dict)
    node_stages: dict[str, dict[str, float]] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # run-wide: eval (wall), build
    evaluation: fleet.EvalStats | None = None


class _Feed:
    """Results of the evaluation thread, taken by the building one (a condition variable)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[fleet.NodeEval] = []
        self.done = False
        self.error: BaseException | None = None
        self.stats: fleet.EvalStats | None = None
        self.closed = threading.Event()  # the taker is gone (Ctrl-C): drop what comes

    def add(self, results: Sequence[fleet.NodeEval], *, done: bool = False) -> None:
        with self.cond:
            self.pending.extend(results)
            self.done = self.done or done
            self.cond.notify()

    def end(self, stats: fleet.EvalStats | None, error: BaseException | None) -> None:
        with self.cond:
            self.stats, self.error, self.done = stats, error, True
            self.cond.notify()

    def take(self) -> tuple[list[fleet.NodeEval], bool]:
        """What arrived since the last call, waiting for something; and whether that is all."""
        with self.cond:
            while not self.pending and not self.done:
                self.cond.wait(0.1)  # short waits: a Ctrl-C is seen at once
            if self.error is not None:
                raise self.error
            taken, self.pending = self.pending, []
            return taken, self.done


def produce(
    names: Sequence[str],
    flake: str,
    *,
    emit: EventSink = discard,
    evaluator: Evaluator | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
    limits: fleet.EvalLimits = fleet.EvalLimits(),  # noqa: B008 (frozen)
    build_here: bool = False,
    keep_result: bool = False,
    results_dir: str = "",
    on_evaluated: Callable[[Mapping[str, System]], None] | None = None,
) -> Produced:
    """Evaluate the nodes in worker processes (`limits`) and, with `build_here`, build each
    evaluated node as soon as possible: whatever was evaluated while a build ran is built next,
    in ONE `nix-store --realise` (one build at a time keeps --max-jobs the number of builds
    here). `on_evaluated` is told every evaluated system once the evaluation is over.

    The evaluation runs in a daemon thread and the builds in the caller's: a Ctrl-C reaches the
    build's nix-store, which `process.run` stops, and no build starts after it.
    """
    made = Produced()
    for name in names:
        emit(StageStarted(name, Stage.EVAL))
    started = time.monotonic()
    feed = _Feed()
    announced = False
    try:  # from the thread's start: a Ctrl-C as early as that must close the feed too
        threading.Thread(
            target=_evaluate_into,
            args=(feed, flake, names, evaluator, flags, limits),
            name="nixherd-evaluate",
            daemon=True,
        ).start()
        while True:
            taken, done = feed.take()
            fresh = _sort(made, taken, emit, time.monotonic() - started)
            if done and not announced:
                made.stages["eval"] = time.monotonic() - started
                made.evaluation = feed.stats
                announced = True
                if on_evaluated is not None:
                    on_evaluated(dict(made.systems))
            if build_here and fresh:
                failures, seconds = build(
                    fresh, emit=emit, keep_result=keep_result, results_dir=results_dir, flags=flags
                )
                made.stages["build"] = made.stages.get("build", 0.0) + seconds
                for name in fresh:
                    made.node_stages[name]["build"] = seconds
                for name, error in failures.items():
                    made.failures[name] = (Stage.BUILD, error)
                    del made.systems[name]
            if done and not feed.pending:
                break
    finally:
        feed.closed.set()
    made.evals = {name: made.evals[name] for name in names}
    return made


def _evaluate_into(
    feed: _Feed,
    flake: str,
    names: Sequence[str],
    evaluator: Evaluator | None,
    flags: nix.NixFlags,
    limits: fleet.EvalLimits,
) -> None:
    try:
        if evaluator is not None:
            feed.add(list(evaluator(flake, names).values()), done=True)
            feed.end(None, None)
            return

        def on_node(result: fleet.NodeEval) -> None:
            if not feed.closed.is_set():
                feed.add([result])

        _, stats = fleet.eval_fleet(
            flake, names, flags=flags, limits=limits, on_node=on_node, cancel=feed.closed
        )
        feed.end(stats, None)
    except BaseException as exc:  # raised again in the caller's thread
        feed.end(None, exc)


def _sort(
    made: Produced, taken: Sequence[fleet.NodeEval], emit: EventSink, wall: float
) -> dict[str, System]:
    """File newly evaluated nodes; the systems among them (to build)."""
    fresh: dict[str, System] = {}
    for ev in taken:
        made.evals[ev.name] = ev
        # The report's figure is the node's own evaluation; the event's (and so the timeline's
        # span, started with the run) lasts until its result came out of its worker.
        made.node_stages[ev.name] = {"eval": wall if ev.seconds is None else ev.seconds}
        emit(StageFinished(ev.name, Stage.EVAL, wall))
        systems, failures = split([ev.name], {ev.name: ev})
        fresh.update(systems)
        made.failures.update({n: (Stage.EVAL, e) for n, e in failures.items()})
    made.systems.update(fresh)
    return fresh


def split(
    names: Sequence[str], evals: Mapping[str, fleet.NodeEval]
) -> tuple[dict[str, System], dict[str, ErrorInfo]]:
    """The evaluated nodes' systems, and why each other node has none (Nix's error, whole:
    its file positions and trace are how the user finds the mistake)."""
    systems: dict[str, System] = {}
    failures: dict[str, ErrorInfo] = {}
    for name in names:
        ev = evals[name]
        if ev.ok and ev.drv_path and ev.out_path:
            systems[name] = System(ev.drv_path, ev.out_path)
        else:
            failures[name] = ErrorInfo(f"evaluation failed: {ev.error or 'no system'}")
    return systems, failures


def build(
    systems: Mapping[str, System],
    *,
    emit: EventSink = discard,
    keep_result: bool = False,
    results_dir: str = "",
    flags: nix.NixFlags = nix.NO_FLAGS,
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
        nix.realise(drvs, flags=flags, on_line=lambda line: _build_line(line, emit))
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
