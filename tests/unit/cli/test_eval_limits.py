"""--eval-workers and --eval-node-limit: bounded while parsing, handed to the core by every command
that evaluates (eval, build, apply, diff, check --eval)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from nixherd.cli import apply, runs
from nixherd.cli import build as build_cmd
from nixherd.cli import eval as eval_cmd
from nixherd.fleet import evaluate as fleet
from nixherd.fleet.evaluate import EvalLimits


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runs.add_nix_flags(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_values() -> None:
    assert runs.eval_limits(parse()) == EvalLimits(None, None)
    assert runs.eval_limits(parse("--eval-workers", "3", "--eval-node-limit", "7")) == (
        EvalLimits(3, 7)
    )
    assert runs.eval_limits(parse("--eval-node-limit", "auto")) == EvalLimits(None, None)
    assert runs.eval_limits(parse("--eval-node-limit", "0")) == EvalLimits(None, 0)


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--eval-workers", "0", "an integer 1..1024"),
        ("--eval-workers", "1025", "an integer 1..1024"),
        ("--eval-workers", "auto", "an integer 1..1024"),
        ("--eval-node-limit", "-1", "'auto' or an integer 0..1000000 (0: no limit)"),
        ("--eval-node-limit", "1e3", "'auto' or an integer 0..1000000 (0: no limit)"),
    ],
)
def test_bounds_while_parsing(
    flag: str, value: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(flag, value)
    assert info.value.code == 2
    assert f"argument {flag}: must be {rule}, got {value!r}" in capsys.readouterr().err


def test_apply_and_build_carry_them_into_the_options() -> None:
    parser = argparse.ArgumentParser()
    apply.configure(parser)
    options = apply.options_from(parser.parse_args(["--eval-workers", "2"]))
    assert options.evaluation == EvalLimits(2, None)
    assert options.to_data()["eval_workers"] == 2
    for command in (build_cmd, eval_cmd):
        sub = argparse.ArgumentParser()
        command.configure(sub)
        assert sub.parse_args(["--eval-node-limit", "4"]).eval_node_limit == 4


def test_eval_hands_them_to_the_evaluation(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    seen: list[EvalLimits] = []

    def fake(_flake: str, names: Any, **kw: Any) -> dict[str, fleet.NodeEval]:
        seen.append(kw["limits"])
        return {n: fleet.NodeEval(n, "/nix/store/d.drv", "/nix/store/o") for n in names}

    monkeypatch.setattr(fleet, "eval_nodes", fake)
    (tmp_path / "inventory.toml").write_text("[nodes.a]\n")
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    from nixherd.cli import main

    inventory = str(tmp_path / "inventory.toml")
    argv = ["eval", "-i", inventory, "--eval-workers", "3", "--eval-node-limit", "0"]
    assert main(argv) == 0
    assert seen == [EvalLimits(3, 0)]


def test_check_without_eval_refuses_them(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from nixherd.cli import main

    inventory = tmp_path / "inventory.toml"
    inventory.write_text("[nodes.a]\n")
    assert main(["check", "-i", str(inventory), "--eval-workers", "2"]) == 2
    assert "--eval-workers and --eval-node-limit go with --eval" in capsys.readouterr().err
