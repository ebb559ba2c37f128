"""What a deploy is asked to do (options), and the plan `--dry-run` shows before doing it."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nixherd.errors import UsageError
from nixherd.fleet.rollout import Rollout, WaveKind
from nixherd.inventory.entries import HealthCheck, Key
from nixherd.node.goal import Goal
from nixherd.run.nix import NO_FLAGS, NixFlags
from nixherd.run.ssh import Target

DEFAULT_PARALLEL = 10
STATE_DIR = ".nixherd"
# Where a library caller's --keep-result roots go; the command line gives the fleet's state
# directory instead (nixherd.cli.state).
RESULTS_DIR = os.path.join(STATE_DIR, "results")


class DeployNode(Protocol):
    """What the fleet commands need of a node: its name, how it is reached, and its typed
    health checks and keys (`nixherd.inventory.Node` has them all)."""

    @property
    def name(self) -> str: ...
    @property
    def target(self) -> Target: ...
    @property
    def checks(self) -> Mapping[str, HealthCheck]: ...
    @property
    def keys(self) -> Mapping[str, Key]: ...


class OptionError(UsageError):
    """Options that do not go together, in the core's words; `option` names the field (the
    command line maps it to its flag)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """Everything `apply` was asked, free of the command line's types."""

    goal: Goal = Goal.SWITCH
    flake: str = "."
    parallel: int = DEFAULT_PARALLEL  # 0: every node at once
    keep_result: bool = False
    results_dir: str = RESULTS_DIR
    substitute_on_destination: bool = False
    build_on_target: bool = False
    reboot: bool = False
    reboot_timeout: float = 300.0
    rollback: bool = True
    confirm_timeout: float = 30.0
    activation_timeout: float = 600.0
    keys: bool = True
    rollout: Rollout = field(default_factory=Rollout)
    nix: NixFlags = NO_FLAGS  # the user's flags for every local nix eval and build

    def __post_init__(self) -> None:
        if self.parallel < 0:
            raise UsageError(f"parallel must be >= 0, got {self.parallel}")
        if self.build_on_target and not self.goal.copies:
            raise OptionError(
                "build_on_target", "building on the target needs a goal that reaches the nodes"
            )
        if self.reboot and self.goal not in (Goal.SWITCH, Goal.BOOT):
            raise OptionError(
                "reboot", f"reboot goes with the switch or boot goal, not {self.goal.value}"
            )
        timeouts = (self.confirm_timeout, self.reboot_timeout, self.activation_timeout)
        if not all(math.isfinite(t) and t > 0 for t in timeouts):
            raise UsageError("timeouts must be finite and positive")

    def to_data(self) -> dict[str, Any]:
        rollout = self.rollout
        return {
            "goal": self.goal.value,
            "flake": self.flake,
            "parallel": self.parallel,
            "keep_result": self.keep_result,
            "substitute_on_destination": self.substitute_on_destination,
            "build_on_target": self.build_on_target,
            "reboot": self.reboot,
            "rollback": self.rollback,
            "confirm_timeout": self.confirm_timeout,
            "activation_timeout": self.activation_timeout,
            "keys": self.keys,
            "canary": rollout.canary,
            "batch": None if rollout.batch is None else str(rollout.batch),
            "max_failures": None if rollout.max_failures is None else str(rollout.max_failures),
        }


def steps(options: DeployOptions) -> list[str]:
    """The steps each node goes through, in order, for these options."""
    goal = options.goal
    out = ["evaluate"]
    if goal is Goal.BUILD or not options.build_on_target:
        out.append("build (here, one nix process for all nodes)")
    if goal is Goal.BUILD:
        return out
    out.append(
        "probe (skip the node if it already runs its system"
        + (", booted into it)" if options.reboot else ")")
    )
    out.append(
        "copy the derivations and build on the node"
        if options.build_on_target
        else "copy the closure (nix copy)"
        + (" with --substitute-on-destination" if options.substitute_on_destination else "")
    )
    if goal is Goal.PUSH:
        return out
    if options.keys:
        out.append("upload keys (pre-activation)")
    if goal.sets_profile:
        out.append("set the system profile")
    activation = f"switch-to-configuration {goal.value}"
    if goal.changes_running_system and options.rollback:
        activation += f", then confirm within {options.confirm_timeout:g} s or roll back"
    activation += f" (stopped if still running after {options.activation_timeout:g} s)"
    out.append(activation)
    if options.keys:
        out.append("upload keys (post-activation)")
    if options.reboot:
        out.append(
            f"reboot and wait (up to {options.reboot_timeout:g} s), then keys again and "
            "health checks"
        )
    return out


def describe(
    nodes: Sequence[DeployNode],
    options: DeployOptions,
    *,
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """The plan as lines of text: nothing is evaluated, built or contacted to make it."""
    names = [n.name for n in nodes]
    targets = {n.name: n.target for n in nodes}
    # One inventory, one ssh_config: every node carries the same.
    ssh_config = next((t.ssh_config for t in targets.values() if t.ssh_config), None)
    parallel = "all" if options.parallel == 0 else str(options.parallel)
    lines = [
        f"goal: {options.goal.value}",
        f"flake: {options.flake}",
        f"nodes: {len(names)} (at most {parallel} at once)",
        f"rollout: {options.rollout.describe(len(names))}",
    ]
    if ssh_config:
        lines.append(f"ssh config: {ssh_config}")
    if options.nix.words():
        lines.append(f"nix flags: {shlex.join(options.nix.words())}")
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    lines.append("steps per node:")
    lines.extend(f"  {i}. {step}" for i, step in enumerate(steps(options), 1))
    for wave in options.rollout.waves(names):
        label = "canary" if wave.kind is WaveKind.CANARY else "batch"
        lines.append(f"{label} ({len(wave.nodes)}):")
        for name in wave.nodes:
            target = targets[name]
            lines.append(f"  {name}  {target.describe()}")
    return lines
