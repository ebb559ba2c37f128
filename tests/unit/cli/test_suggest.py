"""Mistyped commands, flags and choices: the message names what was mistyped and the nearest
spelling, exit 2, nothing started. Before, `apply --paralel 3` blamed the GOAL argument ("invalid
choice: '3'") and `aply` listed every command without a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixherd.cli import main

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "seed-fleet" / "inventory.toml"


@pytest.fixture(autouse=True)
def _private_parse_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(tmp_path / "cache"))


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The error line of a command line argparse refuses (exit 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0].split(": error: ", 1)[1]


def test_a_mistyped_command_gets_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "aply") == "unknown command 'aply'; did you mean 'apply'?"
    assert error_of(capsys, "-i", str(SEED), "stauts") == (
        "unknown command 'stauts'; did you mean 'status'?"
    )


def test_a_word_far_from_every_command_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    message = error_of(capsys, "frobnicate")
    assert message.startswith("unknown command 'frobnicate' (commands: nodes, show, check, ")
    assert "did you mean" not in message


def test_a_mistyped_subcommand_names_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "lab", "stauts") == (
        "unknown command 'lab stauts'; did you mean 'lab status'?"
    )
    assert error_of(capsys, "keys", "uplaod") == (
        "unknown command 'keys uplaod'; did you mean 'keys upload'?"
    )


def test_a_mistyped_flag_is_named_not_the_goal(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse alone: "argument GOAL: invalid choice: '3'": the flag's value taken for the GOAL.
    assert error_of(capsys, "apply", "--paralel", "3") == (
        "unknown flag --paralel; did you mean --parallel?"
    )
    assert error_of(capsys, "apply", "switch", "--paralel", "3") == (
        "unknown flag --paralel; did you mean --parallel?"
    )


def test_a_mistyped_flag_with_its_value_attached(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse alone: "unrecognized arguments: --paralel=3".
    assert error_of(capsys, "apply", "--paralel=3") == (
        "unknown flag --paralel; did you mean --parallel?"
    )
    assert error_of(capsys, "nodes", "--jsno") == "unknown flag --jsno; did you mean --json?"


def test_a_mistyped_flag_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "--debgu", "nodes") == "unknown flag --debgu; did you mean --debug?"
    assert error_of(capsys, "--inventroy", str(SEED), "nodes") == (
        "unknown flag --inventroy; did you mean --inventory?"
    )


def test_a_flag_far_from_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "status", "--zzz") == ("unknown flag --zzz (see nixherd status --help)")


def test_a_single_dash_typo_of_a_long_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "apply", "-parallel", "3") == (
        "unknown flag -parallel; did you mean --parallel?"
    )


def test_a_mistyped_choice_gets_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_of(capsys, "apply", "swtich") == (
        "invalid GOAL 'swtich'; did you mean 'switch'? "
        "(choose from build, push, switch, boot, test, dry-activate)"
    )


def test_abbreviations_and_values_are_not_typos(capsys: pytest.CaptureFixture[str]) -> None:
    # A unique prefix is argparse's abbreviation; a value after an option taking one is a value;
    # after `--` nothing is a flag. These parse (or fail for their own reason).
    from nixherd.cli import build_parser

    parser = build_parser("apply")
    args = parser.parse_args(["apply", "--paral", "3", "boot"])
    assert (args.parallel, args.goal) == (3, "boot")
    parser = build_parser("exec")
    args = parser.parse_args(["exec", "--on", "web", "--", "ls", "--colour"])
    assert args.command == ["--", "ls", "--colour"]
    # A value that looks like a flag, after an option that needs one: argparse's own message.
    message = error_of(capsys, "nodes", "--on", "-web")
    assert message == "argument --on: expected one argument"


def test_known_flags_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-i", str(SEED), "nodes", "--on", "nixos-hk", "--json"]) == 0
    assert '"nixos-hk"' in capsys.readouterr().out
