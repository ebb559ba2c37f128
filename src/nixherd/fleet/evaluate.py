"""Evaluating a fleet's nodes through Nix, in bounded memory: worker processes of at most K nodes
each, at most N at a time, every node's result handed on as soon as Nix has it.

The flake is one built with `lib.mkFleet` (or anything with `nixosConfigurations.<node>` whose
value has `config.system.build.toplevel`, as `nixpkgs.lib.nixosSystem` and the lab's mkSystem
give). A `nix eval` evaluates a chunk of nodes (Nix start-up and evaluating nixpkgs are paid once
per process, so not one process per node), forcing them one after the other and printing each
one's result as soon as it has it (`builtins.trace`, on stderr): the deploy starts building a
node while the others are still evaluated. Memory grows with every node a process evaluates
(nothing of an evaluated node is freed before the process ends), so the chunk size K bounds it,
and `EvalLimits.workers` processes run at once. Colmena's anchor, for comparison: chunks sized
from the available memory (512 MB a node), ONE evaluation process at a time, and a chunk's build
waits for its whole chunk (zhaofengli/colmena src/nix/deployment/limits.rs and mod.rs).

A node whose evaluation `throw`s is caught with `builtins.tryEval`, and explained by evaluating it
once more alone (tryEval gives no message). Errors tryEval cannot catch (a missing attribute, a
type error) end the process; since nodes are forced in order, the node being evaluated then is
the first without a result: it gets Nix's message, and the nodes after it go on in a new process.
Every such extra process (an explanation, a restart) is rationed: past MAX_DIAGNOSES, a failing
node is reported with the command that shows its error, and the rest of a chunk that stopped is
reported not evaluated.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.errors import CommandError, NixherdError, UsageError

# Re-exported: callers and tests know them as fleet.evaluate's.
from nixherd.fleet.nixerror import MAX_ERROR_LINES as MAX_ERROR_LINES
from nixherd.fleet.nixerror import error_message as error_message
from nixherd.fleet.nixerror import excerpt as excerpt
from nixherd.fleet.report import EvaluationData
from nixherd.run import nix, process

CONFIGURATIONS = "nixosConfigurations"
TOPLEVEL = "config.system.build.toplevel"

# Extra nix processes one call may spend on finding and explaining failures.
MAX_DIAGNOSES = 16
# Colmena's heuristic for the nodes one evaluation may hold: the available memory, less 1 GiB
# for the rest of the system, at 512 MiB a node (zhaofengli/colmena
# src/nix/deployment/limits.rs: EVAL_RESERVE_MB, EVAL_PER_HOST_MB), shared here by the workers.
RESERVE_MIB = 1024
PER_NODE_MIB = 512
FALLBACK_NODE_LIMIT = 10  # Colmena's, when the available memory cannot be read


@dataclass(frozen=True, slots=True)
class NodeEval:
    """One node's evaluation: its system's derivation and output path, or Nix's error."""

    name: str
    drv_path: str | None = None
    out_path: str | None = None
    error: str | None = None
    seconds: float | None = None  # its own evaluation, from the previous node's in its process

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "drv_path": self.drv_path,
            "out_path": self.out_path,
            "error": self.error,
        }


class FlakeError(NixherdError):
    """The flake itself does not evaluate (no node can be evaluated); carries Nix's message."""


def flake_for(inventory: str) -> str:
    """The flake that holds an inventory: the directory the inventory file lives in.

    Raises FlakeError when it has no flake.nix (nix would look further up, for another flake).
    """
    directory = os.path.dirname(os.path.abspath(inventory))
    if not os.path.isfile(os.path.join(directory, "flake.nix")):
        raise FlakeError(
            f"no flake.nix next to the inventory in {directory}: Nix evaluates the nodes through "
            "the flake beside it (see docs/nix-library.md)"
        )
    return directory


@dataclass(frozen=True, slots=True)
class EvalLimits:
    """How evaluation is bounded: `workers` nix processes at once (None: one per core), each
    evaluating at most `node_limit` nodes (None: from the available memory; 0: no limit, the
    nodes shared evenly by the workers)."""

    workers: int | None = None
    node_limit: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"eval workers must be >= 1, got {self.workers}")
        if self.node_limit is not None and self.node_limit < 0:
            raise UsageError(f"eval node limit must be >= 0, got {self.node_limit}")

    def plan(self, count: int) -> tuple[int, int]:
        """(processes at once, nodes per process) for `count` nodes."""
        workers = self.workers or len(os.sched_getaffinity(0)) or 1
        limit = auto_node_limit(workers) if self.node_limit is None else self.node_limit
        per = max(1, math.ceil(count / workers))
        if limit > 0:
            per = min(per, limit)
        return max(1, min(workers, math.ceil(count / per))), per

    def to_data(self) -> dict[str, Any]:
        return {"eval_workers": self.workers, "eval_node_limit": self.node_limit}


def auto_node_limit(workers: int, meminfo: str = "/proc/meminfo") -> int:
    """Nodes per process when none is given: Colmena's heuristic, the memory shared by workers."""
    try:
        with open(meminfo) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return FALLBACK_NODE_LIMIT
    return max(1, (available - RESERVE_MIB) // (PER_NODE_MIB * workers))


@dataclass(frozen=True, slots=True)
class EvalStats:
    """What an evaluation cost: its processes, and the peak memory of the largest one."""

    workers: int  # processes at once, at most
    node_limit: int  # nodes per process, at most
    processes: int  # nix processes run (chunks, restarts and explanations)
    peak_rss: int | None  # bytes: the largest peak resident memory of one process
    seconds: float

    def to_data(self) -> EvaluationData:
        return {
            "workers": self.workers,
            "node_limit": self.node_limit,
            "processes": self.processes,
            "peak_rss_bytes": self.peak_rss,
            "peak_rss_bound_bytes": None if self.peak_rss is None else self.peak_rss * self.workers,
            "seconds": round(self.seconds, 3),
        }


OnNode = Callable[[NodeEval], None]


def eval_nodes(
    flake: str,
    names: Sequence[str],
    *,
    timeout: float | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
    max_diagnoses: int = MAX_DIAGNOSES,
    limits: EvalLimits = EvalLimits(),
) -> dict[str, NodeEval]:
    """Evaluate `config.system.build.toplevel` of `nixosConfigurations.<name>` for each name.

    Returns one NodeEval per name, in the order given; see `eval_fleet`.
    """
    return eval_fleet(
        flake, names, timeout=timeout, flags=flags, max_diagnoses=max_diagnoses, limits=limits
    )[0]


def eval_fleet(
    flake: str,
    names: Sequence[str],
    *,
    timeout: float | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
    max_diagnoses: int = MAX_DIAGNOSES,
    limits: EvalLimits = EvalLimits(),
    on_node: OnNode | None = None,
    cancel: threading.Event | None = None,
) -> tuple[dict[str, NodeEval], EvalStats]:
    """Evaluate the nodes in worker processes as `limits` say; (results in the order given,
    what it cost). `on_node` gets each node's result as soon as it is known, from a worker thread.
    Once `cancel` is set, no nix process starts (the results are then incomplete).

    Raises FlakeError when the flake's `nixosConfigurations` cannot be evaluated at all (the
    flake is missing or broken), CommandError when a nix process times out. `timeout` applies
    to each nix process; `flags` (the user's Nix flags) go to each of them.
    """
    started = time.monotonic()
    unique = list(dict.fromkeys(names))
    workers, per = limits.plan(len(unique))
    chunks = [piece[i : i + per] for piece in _chunks(unique) for i in range(0, len(piece), per)]
    evaluator = _Evaluator(flake, timeout, flags, max_diagnoses)
    results: dict[str, NodeEval] = {}
    lock = threading.Lock()

    def deliver(result: NodeEval) -> None:
        with lock:
            results[result.name] = result
        if on_node is not None:
            on_node(result)

    work = [c for c in chunks if c]
    _run_pool(work, workers, lambda chunk: evaluator.chunk(chunk, deliver), cancel)
    stats = EvalStats(
        min(workers, len(work)),
        per,
        evaluator.processes,
        evaluator.peak,
        time.monotonic() - started,
    )
    return {name: results[name] for name in names if name in results}, stats


def _run_pool(
    chunks: list[list[str]],
    workers: int,
    work: Callable[[list[str]], None],
    cancel: threading.Event | None,
) -> None:
    """Run `work` on every chunk, `workers` at a time, in daemon threads; raise the first error.

    Daemon threads, and the caller waiting on a queue: a Ctrl-C reaches the caller at once, and
    the nix processes still running die with nixherd (process.py's guardian) rather than hold
    its exit. No chunk starts after an error or a Ctrl-C.
    """
    todo: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
    for chunk in chunks:
        todo.put(chunk)
    ended: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
    stop = cancel or threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                chunk = todo.get_nowait()
            except queue.Empty:
                break
            try:
                work(chunk)
            except BaseException as exc:  # handed to the caller, which raises it
                ended.put(exc)
                return
        ended.put(None)

    count = min(workers, len(chunks))
    for _ in range(count):
        threading.Thread(target=worker, name="nixherd-eval", daemon=True).start()
    try:
        for _ in range(count):
            error = ended.get()
            if error is not None:
                raise error
    finally:
        stop.set()


# The names travel in nix's argv (a pure flake evaluation cannot read them from a file), and
# Linux caps one argument at 128 KiB: past this, the batch is split. That is about 5,000 nodes a
# process, and evaluating nixpkgs once more per 5,000 nodes is lost in the noise.
MAX_NAMES_CHARS = 96 * 1024


def _chunks(names: list[str]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        cost = len(nix.nix_string(name).encode()) + 1
        if chunks[-1] and size + cost > MAX_NAMES_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += cost
    return chunks


# How a node's result reaches nixherd: a line of Nix's stderr, as `builtins.trace` prints it
# (Nix 2.8 and later, Lix: "trace: " and the string).
_TRACE = "trace: nixherd-eval "


class _Evaluator:
    """The nix processes of one evaluation, shared by its workers (threads)."""

    def __init__(
        self, flake: str, timeout: float | None, flags: nix.NixFlags, diagnoses: int
    ) -> None:
        self.flake = flake
        self.installable = f"{flake}#{CONFIGURATIONS}"
        self.timeout = timeout
        self.flags = flags
        self.diagnoses = self.budget = diagnoses
        self.known: frozenset[str] | None = None
        self.lock = threading.Lock()
        self.processes = 0
        self.peak: int | None = None

    def spend(self) -> bool:
        """Take one extra process from the budget; False when it is spent."""
        with self.lock:
            if self.diagnoses < 1:
                return False
            self.diagnoses -= 1
            return True

    def chunk(self, names: list[str], deliver: OnNode) -> None:
        """Evaluate `names` (in one process, while nothing fails), delivering every result."""
        todo = names
        while todo:
            got, failure = self._stream(todo, deliver)
            for name, result in got.items():
                if result is None:
                    deliver(self.explain(name))
            rest = [n for n in todo if n not in got]
            if failure is None or not rest:
                for name in rest:
                    deliver(NodeEval(name, error="nix eval ended without a result for it"))
                return
            if not got:
                self._check_flake(failure)
            culprit, todo = rest[0], rest[1:]
            deliver(NodeEval(culprit, error=_failure_message(failure)))
            if todo and not self.spend():
                why = (
                    f"not evaluated: the nix process evaluating it stopped at {culprit}'s error, "
                    f"and the {self.budget} extra nix processes allowed for failures are spent"
                )
                for name in todo:
                    deliver(NodeEval(name, error=why))
                return

    def _stream(
        self, names: list[str], deliver: OnNode
    ) -> tuple[dict[str, NodeEval | None], CommandError | None]:
        """One nix process over `names`: each result as Nix prints it (None: a caught error,
        to be explained), and the process's failure if it ended with one."""
        argv = nix.nix_argv("eval", "--json", self.installable, *self.flags.eval_args())
        argv += ["--apply", _batch_apply(names)]
        got: dict[str, NodeEval | None] = {}
        other: list[str] = []
        mark = [time.monotonic()]

        def line(text: str) -> None:
            if not text.startswith(_TRACE):
                other.append(text)
                return
            entry: dict[str, Any] = json.loads(text[len(_TRACE) :])
            now = time.monotonic()
            seconds, mark[0] = now - mark[0], now
            name = str(entry["name"])
            if "drv" in entry:
                result = NodeEval(name, entry["drv"], entry["out"], seconds=seconds)
            elif entry.get("error"):
                result = NodeEval(name, error=str(entry["error"]), seconds=seconds)
            else:
                got[name] = None
                return
            got[name] = result
            deliver(result)

        ran = process.run(argv, timeout=self.timeout, on_line=line, check=False, what="nix eval")
        self._count(ran.max_rss)
        if ran.ok:
            return got, None
        return got, CommandError(argv, ran.returncode, "\n".join(other), what="nix eval")

    def _count(self, max_rss: int | None) -> None:
        with self.lock:
            self.processes += 1
            if max_rss is not None:
                self.peak = max(self.peak or 0, max_rss)

    def _eval(self, apply: str) -> Any:
        with self.lock:
            self.processes += 1
        return nix.eval_json(self.installable, apply=apply, flags=self.flags, timeout=self.timeout)

    def _check_flake(self, failure: CommandError) -> None:
        """Tell a broken flake (raise) from a broken node (return), once per evaluation."""
        if self.known is not None:
            return
        try:
            self.known = frozenset(self._eval("builtins.attrNames"))
        except CommandError as exc:
            if exc.returncode is None:
                raise
            raise FlakeError(
                f"cannot evaluate {self.installable}: {error_message(exc.output)}"
            ) from failure

    def explain(self, name: str) -> NodeEval:
        """Evaluate one node without tryEval, so that Nix's own message comes out."""
        if not self.spend():
            argv = nix.nix_argv("eval", self.node_installable(name), *self.flags.eval_args())
            command = shlex.join(argv)
            return NodeEval(name, error=f"evaluation failed; to see why: {command}")
        try:
            data = self._eval(_single_apply(name))
        except CommandError as exc:
            if exc.returncode is None:
                raise
            return NodeEval(name, error=error_message(exc.output))
        # It failed with the other nodes but not alone: report it rather than pretend it is fine.
        return NodeEval(
            name,
            data["drv"],
            data["out"],
            error="evaluation failed with the other nodes but succeeded alone (impure module?)",
        )

    def node_installable(self, name: str) -> str:
        attr = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else nix.nix_string(name)
        return f"{self.flake}#{CONFIGURATIONS}.{attr}.{TOPLEVEL}.drvPath"


def _failure_message(failure: CommandError) -> str:
    code = failure.returncode or 0
    if code >= 0:
        return error_message(failure.output)
    # The kernel's OOM killer is the usual one: say which knob holds the memory down.
    return (
        f"nix eval was killed by signal {-code} while evaluating this node (out of memory? "
        "fewer nodes per process: --eval-node-limit)"
    )


def _toplevel(name: str) -> str:
    return f"configs.${{{nix.nix_string(name)}}}.{TOPLEVEL}"


def _batch_apply(names: Sequence[str]) -> str:
    """A function over `nixosConfigurations` that forces the nodes in order and traces each
    one's result as JSON: {drv, out}, or an error (`null`: a caught `throw`/`assert`, whose
    message only a second evaluation shows). It returns how many there were.

    `foldl'` forces one node after the other: when an uncatchable error ends the process, the
    node it was on is the first without a result. (Not `outPath`: Nix prints an attrset that
    has one as that string.)
    """
    quoted = " ".join(nix.nix_string(name) for name in names)
    return f"""configs: builtins.foldl' (count: name:
  let
    cfg = configs.${{name}};
    has = builtins.tryEval (cfg ? config && cfg.config ? system
      && cfg.config.system ? build && cfg.config.system.build ? toplevel);
    top = cfg.config.system.build.toplevel;
    drv = builtins.tryEval top.drvPath;
    out = builtins.tryEval top.outPath;
    result =
      if !(configs ? ${{name}}) then {{ error = "no {CONFIGURATIONS}.${{name}} in the flake"; }}
      else if !has.success then {{ error = null; }}
      else if !has.value then {{ error = "${{name}}: no config.system.build.toplevel"; }}
      else if drv.success && out.success then {{ drv = drv.value; out = out.value; }}
      else {{ error = null; }};
    line = "nixherd-eval " + builtins.toJSON ({{ inherit name; }} // result);
  in builtins.seq (builtins.trace line null) (count + 1)) 0 [ {quoted} ]"""


def _single_apply(name: str) -> str:
    top = _toplevel(name)
    return f"configs: {{ drv = {top}.drvPath; out = {top}.outPath; }}"
