"""The fleet's systems: every node's evaluated in ONE nix process, then built in ONE.

Used by the deploy pipeline and by the fleet-wide diff (fleet/commands.py): neither needs the
other to get the systems.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence

from nixherd.errors import CommandError
from nixherd.events import RUN_WIDE, EventSink, LogLine, Stage, StageFinished, StageStarted, discard
from nixherd.fleet import evaluate as fleet
from nixherd.fleet.report import ErrorInfo
from nixherd.node.delivery import System
from nixherd.run import nix

Evaluator = Callable[[str, Sequence[str]], Mapping[str, fleet.NodeEval]]


def evaluate(
    names: Sequence[str],
    flake: str,
    *,
    emit: EventSink = discard,
    evaluator: Evaluator | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
) -> tuple[dict[str, fleet.NodeEval], float]:
    """Every node's system derivation, in ONE nix process; (per-node results, seconds).

    `evaluator` stands in for `fleet.eval_nodes` (with the user's Nix `flags`) in tests.
    """
    for name in names:
        emit(StageStarted(name, Stage.EVAL))
    started = time.monotonic()
    run = evaluator or functools.partial(fleet.eval_nodes, flags=flags)
    results = dict(run(flake, names))
    seconds = time.monotonic() - started
    for name in names:
        emit(StageFinished(name, Stage.EVAL, seconds))
    return results, seconds


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
