"""The command-line reference (docs/cli.md, the man page docs/nixherd.1): derived from the parser,
checked in, never stale; every command, flag, bound, environment variable and exit code in it."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nixherd.cli import COMMANDS, build_parser, clidocs, manpage

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src" / "nixherd"
CLI_MD = ROOT / "docs" / "cli.md"
MAN = ROOT / "docs" / "nixherd.1"


def reference() -> clidocs.Reference:
    return clidocs.reference(build_parser())


def test_the_checked_in_files_are_what_the_parser_gives() -> None:
    # Fails when a command or flag changes without `python scripts/gen-cli-docs.py`.
    ref = reference()
    assert CLI_MD.read_text() == clidocs.markdown(ref)
    assert MAN.read_text() == manpage.roff(ref)


def test_the_script_says_the_files_are_fresh() -> None:
    script = ROOT / "scripts" / "gen-cli-docs.py"
    check = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert (check.returncode, check.stderr) == (0, "")


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += all_parsers(sub)
    return found


def test_every_command_and_flag_is_documented() -> None:
    text = CLI_MD.read_text()
    man = MAN.read_text()
    parsers = all_parsers(build_parser())
    assert len(parsers) > len(COMMANDS)  # subcommands (lab up, keys upload, ...) too
    for parser in parsers[1:]:
        name = parser.prog.split(" ", 1)[1]
        assert f"\n### nixherd {name}\n" in text
        assert f"\n.SS {name.replace('-', chr(92) + '-')}\n" in man
    for parser in parsers:
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}`" in text or f"`{option}, " in text or f", {option}`" in text
                assert option.replace("-", "\\-") in man


def test_a_flag_added_to_a_command_shows_up() -> None:
    # Other branches add flags: the generator needs no change to document them.
    parser = build_parser()
    apply = next(p for p in all_parsers(parser) if p.prog == "nixherd apply")
    apply.add_argument("--frobnicate", metavar="HOW", help="frobnicate the nodes")
    text = clidocs.markdown(clidocs.reference(parser))
    assert "| `--frobnicate` | `HOW` |  | frobnicate the nodes |" in text


def test_every_number_has_its_bound() -> None:
    ref = reference()
    options = [o for c in ref.commands for o in c.options] + list(ref.global_options)
    numbers = [o for o in options if o.value in clidocs.NUMBER_METAVARS]
    assert {o.label for o in numbers} >= {"--parallel", "--confirm-timeout", "--canary", "-n"}
    for option in numbers:
        assert option.bound, option.label
    text = CLI_MD.read_text()
    assert "| `--parallel` | `N` | 0..1000 (0: all nodes at once) |" in text
    assert "| `--batch` | `N\\|P%` | N: 0..999999999; P%: 0..100 |" in text
    assert "| `--base-port` | `P` | 1..65535 |" in text
    assert "| `GOAL` |  | one of: build, push, switch, boot, test, dry-activate |" in text


def test_a_number_without_a_bound_is_refused() -> None:
    parser = build_parser()
    apply = next(p for p in all_parsers(parser) if p.prog == "nixherd apply")
    apply.add_argument("--retries", metavar="N", help="try again N times")
    with pytest.raises(ValueError, match="--retries: no bound"):
        clidocs.reference(parser)


def python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def environment_read() -> set[str]:
    """Every variable nixherd's code reads by name: os.environ.get("X"), os.environ["X"],
    "X" in os.environ, and every NIXHERD_* name anywhere in the source."""
    names: set[str] = set()
    for path in python_files():
        source = path.read_text()
        names.update(re.findall(r"\bNIXHERD_[A-Z_]+\b", source))
        for node in ast.walk(ast.parse(source)):
            key: ast.expr | None = None
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.get":
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            elif isinstance(node, ast.Compare) and ast.unparse(node.comparators[0]) in (
                "os.environ",
            ):
                key = node.left
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    # argcomplete's protocol between its script and nixherd (_ARGCOMPLETE...) and the line the
    # shell hands over on a TAB: not settings for users.
    return {name for name in names if not name.startswith(("_", "COMP_"))}


def test_every_environment_variable_read_is_documented() -> None:
    documented = {name for name, _ in clidocs.ENVIRONMENT}
    read = environment_read()
    assert {"NIXHERD_INVENTORY", "NIXHERD_FLAKE", "NIXHERD_LAB_DIR", "NO_COLOR"} <= read
    assert read - documented == set()
    assert "| `NIXHERD_INVENTORY` |" in CLI_MD.read_text()


def exit_codes_in_source() -> set[int]:
    """Exit codes the CLI can return: the error classes' exit_code, the *_EXIT constants of
    the CLI, and every integer a CLI function returns literally."""
    codes: set[int] = set()
    paths = [SRC / "errors.py", *sorted((SRC / "cli").glob("*.py"))]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            value: ast.expr | None = None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = ast.unparse(node.targets[0])
                if target == "exit_code" or target.endswith("_EXIT"):
                    value = node.value
            elif isinstance(node, ast.Return) and path.parent.name == "cli":
                value = node.value
            if isinstance(value, ast.Constant) and type(value.value) is int:
                codes.add(value.value)
    return codes


def test_every_exit_code_is_documented() -> None:
    documented = {code for code, _ in clidocs.EXIT_CODES}
    found = exit_codes_in_source()
    assert {0, 1, 2, 3, 70, 130} <= found
    assert found == documented
    text = CLI_MD.read_text()
    for code in documented:
        assert f"\n| {code} | " in text


def test_the_man_page_renders_without_a_warning() -> None:
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    rendered = subprocess.run(
        ["groff", "-man", "-Tutf8", "-P-cbou", str(MAN)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert "nixherd - deploy NixOS configurations" in rendered
    assert "EXIT STATUS" in rendered and "130" in rendered
    assert "--parallel N" in rendered.replace("\u2010", "-").replace("\u2212", "-")
