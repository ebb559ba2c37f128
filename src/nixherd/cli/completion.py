"""`nixherd completion bash|zsh|fish`: the shell's completion script, and the answers to it.

The library is argcomplete (https://github.com/kislyuk/argcomplete): its scripts for bash, zsh and
fish (argcomplete/shell_integration.py) run `nixherd` itself on each TAB with the line in
COMP_LINE/COMP_POINT and `_ARGCOMPLETE` set, and read the answers from file descriptor 8. So the
completions are always the parser's own, flags added by any command included, and `--on` can
complete the inventory's node names, @tags and role:roles. shtab (static scripts, no process per
TAB) has no fish support and could not complete from the inventory.

A TAB costs what `nixherd nodes` costs: `complete` builds only the parser of the command on the
line (none yet: the full parser, to complete the command's name), and argcomplete is imported only
then. This module does not import `nixherd.cli` (which calls it): what it needs is handed in.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

HELP = "print the completion script for bash, zsh or fish (see docs/cli.md to install it)"

SHELLS = ("bash", "zsh", "fish")
PROG = "nixherd"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return 0


def script(shell: str) -> str:
    """The completion script of `nixherd` for `shell`, argcomplete's own."""
    from argcomplete.shell_integration import shellcode

    # bash and zsh share one script (argcomplete's bashcode starts with `#compdef nixherd`, so
    # zsh can also autoload it from $fpath as `_nixherd`).
    text: str = shellcode([PROG], shell=shell)
    return text if text.endswith("\n") else text + "\n"


def complete(
    build: Callable[[str | None], argparse.ArgumentParser],
    command_of: Callable[[Sequence[str]], str | None],
    inventory_of: Callable[[argparse.Namespace], str],
) -> None:
    """Answer the TAB described by COMP_LINE/COMP_POINT on file descriptor 8, then exit
    (argcomplete's `os._exit`: nothing else of nixherd runs).

    `build(command)` makes the parser (of that one command, or all with None), `command_of(words)`
    finds the command among the words, `inventory_of(args)` the inventory file the line names.
    """
    from argcomplete import autocomplete
    from argcomplete.lexers import split_line

    line = os.environ.get("COMP_LINE", "")
    try:
        point = int(os.environ.get("COMP_POINT", len(line)))
    except ValueError:
        point = len(line)
    # The words before the one being completed; the first is the program.
    words: list[str] = split_line(line, point)[3]
    parser = build(command_of(words[1:]))
    for action in _actions(parser):
        if "--on" in action.option_strings:
            action.completer = selection_completer(inventory_of)  # type: ignore[attr-defined]
        elif not action.option_strings and action.metavar == "NODE":
            action.completer = node_completer(inventory_of)  # type: ignore[attr-defined]
    # Flags are offered once a `-` is typed: a bare TAB lists commands, choices and values.
    autocomplete(parser, always_complete_options=False)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of the parser and of its subcommands' parsers."""
    found: list[argparse.Action] = []
    for action in parser._actions:
        found.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_actions(sub))
    return found


def selection_completer(
    inventory_of: Callable[[argparse.Namespace], str],
) -> Callable[..., list[str]]:
    """argcomplete's completer for `--on`: the last comma-separated piece becomes a node name,
    `@tag` or `role:name` of the inventory, after its `&`/`!` if it has one."""

    def complete_on(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        cut = prefix.rfind(",") + 1
        head, piece = prefix[:cut], prefix[cut:]
        operator = piece[:1] if piece[:1] in ("&", "!") else ""
        rest = piece[len(operator) :]
        words = inventory_words(inventory_of, parsed_args, selection=True)
        return [head + operator + word for word in words if word.startswith(rest)]

    return complete_on


def node_completer(
    inventory_of: Callable[[argparse.Namespace], str],
) -> Callable[..., list[str]]:
    """argcomplete's completer for a NODE argument (`show NODE`): the inventory's node names."""

    def complete_node(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        words = inventory_words(inventory_of, parsed_args, selection=False)
        return [word for word in words if word.startswith(prefix)]

    return complete_node


def inventory_words(
    inventory_of: Callable[[argparse.Namespace], str],
    parsed_args: argparse.Namespace,
    *,
    selection: bool,
) -> list[str]:
    """The node names of the inventory the line names; with `selection`, also its @tags and
    role:roles (the words `--on` understands). None when it cannot be read: a TAB never shows
    an error (`nixherd check` explains the inventory)."""
    try:
        from nixherd.inventory import load

        nodes = list(load(inventory_of(parsed_args), cache=True).nodes.values())
    except Exception:
        return []
    names = [node.name for node in nodes]
    if not selection:
        return names
    tags = sorted({"@" + tag for node in nodes for tag in node.tags})
    roles = sorted({"role:" + node.role for node in nodes if node.role})
    return [*names, *tags, *roles]
