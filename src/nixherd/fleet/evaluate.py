"""Evaluating a fleet's nodes through Nix: each node's system derivation, in one nix process.

The flake is one built with `lib.mkFleet` (or anything with `nixosConfigurations.<node>` whose
value has `config.system.build.toplevel`, as `nixpkgs.lib.nixosSystem` and the lab's mkSystem
give). Every selected node is evaluated in a single `nix eval` (Nix start-up and evaluating
nixpkgs dominate, so one process per node would cost minutes on a large fleet). A node whose
evaluation `throw`s is caught there with `builtins.tryEval`; errors tryEval cannot catch
(a missing attribute, a type error) abort the whole process, so the batch is then split in halves
until the failing nodes are isolated. tryEval gives no message, so each failing node is evaluated
once more on its own to show Nix's own error. Every such diagnosis is one more nix process (that
evaluates nixpkgs again), so they are rationed: past MAX_DIAGNOSES, a failing node is reported
with the command that shows its error, and a batch that still fails as a whole is reported failed
as a whole.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.errors import CommandError, NixherdError
from nixherd.run import nix

CONFIGURATIONS = "nixosConfigurations"
TOPLEVEL = "config.system.build.toplevel"

# Extra nix processes one call may spend on finding and explaining failures.
MAX_DIAGNOSES = 16


@dataclass(frozen=True, slots=True)
class NodeEval:
    """One node's evaluation: its system's derivation and output path, or Nix's error."""

    name: str
    drv_path: str | None = None
    out_path: str | None = None
    error: str | None = None

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


def eval_nodes(
    flake: str,
    names: Sequence[str],
    *,
    timeout: float | None = None,
    flags: nix.NixFlags = nix.NO_FLAGS,
    max_diagnoses: int = MAX_DIAGNOSES,
) -> dict[str, NodeEval]:
    """Evaluate `config.system.build.toplevel` of `nixosConfigurations.<name>` for each name.

    Returns one NodeEval per name, in the order given. Raises FlakeError when the flake's
    `nixosConfigurations` cannot be evaluated at all (the flake is missing or broken). `timeout`
    applies to each nix process; `flags` (the user's Nix flags) go to each of them.
    """
    evaluator = _Evaluator(flake, timeout, flags, max_diagnoses)
    results: dict[str, NodeEval] = {}
    for chunk in _chunks(list(dict.fromkeys(names))):
        results |= evaluator.batch(chunk)
    return {name: results[name] for name in names}


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


class _Evaluator:
    def __init__(
        self, flake: str, timeout: float | None, flags: nix.NixFlags, diagnoses: int
    ) -> None:
        self.flake = flake
        self.installable = f"{flake}#{CONFIGURATIONS}"
        self.timeout = timeout
        self.flags = flags
        self.diagnoses = diagnoses
        self.known: frozenset[str] | None = None

    def _eval(self, apply: str) -> Any:
        return nix.eval_json(self.installable, apply=apply, flags=self.flags, timeout=self.timeout)

    def batch(self, names: list[str]) -> dict[str, NodeEval]:
        if not names:
            return {}
        try:
            data = self._eval(_batch_apply(names))
        except CommandError as exc:
            if exc.returncode is None:
                raise
            self._check_flake(exc)
            message = error_message(exc.output)
            if len(names) == 1:
                return {names[0]: NodeEval(names[0], error=message)}
            if self.diagnoses < 2:
                others = len(names) - 1
                together = f"evaluated with {others} other node{'s' if others > 1 else ''}"
                error = f"{together}, one failed (not narrowed down further): {message}"
                return {n: NodeEval(n, error=error) for n in names}
            self.diagnoses -= 2
            middle = len(names) // 2
            return self.batch(names[:middle]) | self.batch(names[middle:])
        results: dict[str, NodeEval] = {}
        for name in names:
            entry: dict[str, Any] = data[name]
            if "drv" in entry:
                results[name] = NodeEval(name, entry["drv"], entry["out"])
            elif entry.get("error"):
                results[name] = NodeEval(name, error=str(entry["error"]))
            else:
                results[name] = self.explain(name)
        return results

    def _check_flake(self, failure: CommandError) -> None:
        """Tell a broken flake (raise) from a broken node (return), once per evaluator."""
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
        if self.diagnoses < 1:
            argv = nix.nix_argv("eval", self.node_installable(name), *self.flags.eval_args())
            command = shlex.join(argv)
            return NodeEval(name, error=f"evaluation failed; to see why: {command}")
        self.diagnoses -= 1
        try:
            data = self._eval(_single_apply(name))
        except CommandError as exc:
            if exc.returncode is None:
                raise
            return NodeEval(name, error=error_message(exc.output))
        # It failed in the batch but not alone: report it rather than pretend it is fine.
        return NodeEval(
            name,
            data["drv"],
            data["out"],
            error="evaluation failed with the other nodes but succeeded alone (impure module?)",
        )

    def node_installable(self, name: str) -> str:
        attr = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else nix.nix_string(name)
        return f"{self.flake}#{CONFIGURATIONS}.{attr}.{TOPLEVEL}.drvPath"


def _toplevel(name: str) -> str:
    return f"configs.${{{nix.nix_string(name)}}}.{TOPLEVEL}"


def _batch_apply(names: Sequence[str]) -> str:
    """A function over `nixosConfigurations` giving per name {drv, out} or an error.

    `error = null` marks a caught `throw`/`assert`, whose message only a second evaluation shows.
    (Not `outPath`: Nix prints an attrset that has one as that string.)
    """
    quoted = " ".join(nix.nix_string(name) for name in names)
    return f"""configs: builtins.listToAttrs (map (name:
  let
    cfg = configs.${{name}};
    has = builtins.tryEval (cfg ? config && cfg.config ? system
      && cfg.config.system ? build && cfg.config.system.build ? toplevel);
    top = cfg.config.system.build.toplevel;
    drv = builtins.tryEval top.drvPath;
    out = builtins.tryEval top.outPath;
  in {{
    inherit name;
    value =
      if !(configs ? ${{name}}) then {{ error = "no {CONFIGURATIONS}.${{name}} in the flake"; }}
      else if !has.success then {{ error = null; }}
      else if !has.value then {{ error = "${{name}}: no config.system.build.toplevel"; }}
      else if drv.success && out.success then {{ drv = drv.value; out = out.value; }}
      else {{ error = null; }};
  }}) [ {quoted} ])"""


def _single_apply(name: str) -> str:
    top = _toplevel(name)
    return f"configs: {{ drv = {top}.drvPath; out = {top}.outPath; }}"


# Nix's error is shown whole up to this many lines; past it (a long --show-trace), see excerpt().
MAX_ERROR_LINES = 80
_HEAD_LINES = 30
_TAIL_LINES = 20
_MAX_FRAME_LINES = 100
# A line of a trace frame worth keeping when the code excerpts are cut: its position
# (`at /nix/store/...-source/web.nix:4:5:`) or what was being evaluated (`… while evaluating`).
_FRAME = re.compile(r"\s*(at \S+:\d+:\d+:?|… .*|\.\.\. .*)")


def error_message(output: str) -> str:
    """Nix's error as Nix wrote it, from its first `error:` line on, bounded (`excerpt`).

    File positions, the code they point at, "Did you mean", the trace of --show-trace and Nix's
    hint about --show-trace all stay: they are how the user finds the mistake (nixherd passes
    --show-trace on). Warnings before the error go (a dirty Git tree, a substituter retry).
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        # An error not at the start of a line: nix's stdout glued before it, or a message of
        # another tool (the shell, the kernel's OOM killer).
        at = output.find("error:")
        if at < 0:
            return output.strip() or "nix eval failed without a message"
        lines = output[at:].splitlines()
        start = 0
    lines = lines[start:]
    lines[0] = lines[0][len("error:") :].strip()
    if not lines[0] and len(lines) > 1:
        lines.pop(0)  # Nix 2.16+: a bare "error:" opens the trace, the message comes last
    return "\n".join(excerpt(lines)).strip("\n").rstrip()


def excerpt(lines: list[str], limit: int = MAX_ERROR_LINES) -> list[str]:
    """`lines`, or when there are more than `limit`: the first and last lines whole (Nix 2.8
    puts the error first and the trace after it, Nix 2.16+ the trace first and the error
    last), and between them each trace frame's heading and position, without its code."""
    if len(lines) <= limit:
        return lines
    middle = lines[_HEAD_LINES : len(lines) - _TAIL_LINES]
    frames = [line for line in middle if _FRAME.fullmatch(line)]
    if len(frames) > _MAX_FRAME_LINES:
        half = _MAX_FRAME_LINES // 2
        more = f"       … {len(frames) - 2 * half} more trace lines"
        frames = [*frames[:half], more, *frames[-half:]]
    left_out = len(middle) - len(frames)
    note = f"       ({left_out} lines of Nix's message left out: code excerpts of the trace)"
    return [*lines[:_HEAD_LINES], note, *frames, *lines[len(lines) - _TAIL_LINES :]]
