"""plan.py and `apply`'s options: what --dry-run prints, which options go together."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import connkit
import pytest

from nixherd.cli import apply
from nixherd.errors import UsageError
from nixherd.fleet.plan import DeployOptions, OptionError, describe, steps
from nixherd.fleet.rollout import Amount, Rollout
from nixherd.node.goal import Goal


@dataclass(frozen=True)
class FakeNode(connkit.FakeNode):
    host: str = "192.0.2.1"


@pytest.fixture(autouse=True)
def _inventory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The options name the fleet's flake and state after its inventory: one is given, as a user
    gives it (or it is found), wherever the tests run."""
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }\n")
    monkeypatch.setenv("NIXHERD_INVENTORY", str(tmp_path / "inventory.toml"))


def parse(*argv: str) -> DeployOptions:
    parser = argparse.ArgumentParser()
    apply.configure(parser)
    return apply.options_from(parser.parse_args(list(argv)))


def test_command_line_to_options() -> None:
    options = parse(
        "boot",
        "--parallel",
        "0",
        "--flake",
        "path:/f",
        "--keep-result",
        "--substitute-on-destination",
        "--no-keys",
        "--canary",
        "2",
        "--batch",
        "25%",
        "--max-failures",
        "1",
        "--reboot",
    )
    assert options.goal is Goal.BOOT and options.parallel == 0 and options.flake == "path:/f"
    assert options.keep_result and options.substitute_on_destination and not options.keys
    assert options.rollout == Rollout(2, Amount(25, True), Amount(1))
    assert options.reboot and options.rollback


def test_defaults() -> None:
    options = parse()
    assert options.goal is Goal.SWITCH and options.parallel == 10
    assert options.rollback and options.confirm_timeout == 30 and options.keys
    assert options.rollout == Rollout()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["test", "--reboot"], "--reboot goes with switch or boot"),
        (["build", "--build-on-target"], "--build-on-target needs a goal"),
        (["--batch", "ten"], "--batch: expected N or P%"),
    ],
)
def test_conflicting_options_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parallel", "-1"], "argument --parallel: must be an integer 0..1000"),
        (["--confirm-timeout", "0"], "argument --confirm-timeout: must be a number of seconds"),
    ],
)
def test_numbers_out_of_bounds_are_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command line's parsers bound every number (cli/numbers.py), before options exist.
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parallel": -1}, "parallel must be >= 0"),
        ({"confirm_timeout": 0.0}, "timeouts must be finite and positive"),
        ({"confirm_timeout": math.nan}, "timeouts must be finite and positive"),
        ({"reboot_timeout": math.inf}, "timeouts must be finite and positive"),
    ],
)
def test_options_made_without_the_parser_are_checked_too(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        DeployOptions(**fields)


def test_steps_follow_the_goal() -> None:
    assert steps(DeployOptions(goal=Goal.BUILD)) == [
        "evaluate",
        "build (here, one nix process for all nodes)",
    ]
    push = steps(DeployOptions(goal=Goal.PUSH, build_on_target=True))
    assert push[-1] == "copy the derivations and build on the node"
    assert not any("build (here" in s for s in push)
    switch = steps(DeployOptions(confirm_timeout=12, reboot=True))
    assert "set the system profile" in switch
    assert (
        "switch-to-configuration switch, then confirm within 12 s or roll back "
        "(stopped if still running after 600 s)"
    ) in switch
    assert switch[-1].startswith("reboot and wait")
    boot = steps(DeployOptions(goal=Goal.BOOT, keys=False, activation_timeout=90))
    assert "switch-to-configuration boot (stopped if still running after 90 s)" in boot
    assert not any("keys" in s for s in boot)


def test_describe_lists_waves_and_destinations() -> None:
    lab = "/lab/ssh_config"
    nodes = [
        FakeNode("a", ssh_config=lab),
        FakeNode("b", user="deploy", port=2222, ssh_config=lab),
        FakeNode("c", ssh_config=lab),
    ]
    options = DeployOptions(rollout=Rollout(canary=1, batch=Amount(1)), parallel=0)
    lines = describe(nodes, options)
    assert lines[:4] == [
        "goal: switch",
        "flake: .",
        "nodes: 3 (at most all at once)",
        "rollout: 1 canary node(s) first, batches of 1 (1 nodes)",
    ]
    assert "ssh config: /lab/ssh_config" in lines
    tail = lines[lines.index("canary (1):") :]
    assert tail == [
        "canary (1):",
        "  a  root@192.0.2.1 port 22",
        "batch (1):",
        "  b  deploy@192.0.2.1 port 2222",
        "batch (1):",
        "  c  root@192.0.2.1 port 22",
    ]


@pytest.mark.parametrize(
    ("fields", "option", "message"),
    [
        ({"goal": Goal.TEST, "reboot": True}, "reboot", "reboot goes with the switch or boot goal"),
        (
            {"goal": Goal.BUILD, "build_on_target": True},
            "build_on_target",
            "building on the target needs a goal that reaches the nodes",
        ),
    ],
)
def test_the_core_names_the_option_in_its_own_words(
    fields: dict[str, Any], option: str, message: str
) -> None:
    # The core knows no command line: no flag in its message; the CLI maps `option` to its flag.
    with pytest.raises(OptionError, match=message) as info:
        DeployOptions(**fields)
    assert info.value.option == option
    assert "--" not in str(info.value)
