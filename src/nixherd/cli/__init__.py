"""The command line: parse arguments, call the core, render its results and errors once.

Each command lives in its own module under `nixherd.cli` exposing `HELP`, `configure(parser)`
and `run(args) -> int`. Command modules import only the standard library at the top; the core
and heavy libraries (rich, nix, ssh) are imported inside `run`, so `nixherd nodes` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from nixherd.cli.suggest import Parser
from nixherd.cli.version import VersionAction

# Command name -> module under nixherd.cli. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "nodes": "nodes",
    "show": "show",
    "check": "check",
    "lab": "lab",
    "eval": "eval",
    "build": "build",
    "apply": "apply",
    "exec": "exec",
    "status": "status",
    "diff": "diff",
    "rollback": "rollback",
    "check-health": "check_health",
    "keys": "keys",
    "data": "data",
    "report": "report",
    "add": "add",
    "remove": "remove",
    "set": "setvalue",
    "import": "importer",
    "terraform": "terraform",
    "completion": "completion",
}


def _load(module: str) -> ModuleType:
    return importlib.import_module(f"nixherd.cli.{module}")


def common_options() -> Parser:
    """Options every command accepts, before or after its name."""
    common = Parser(add_help=False)
    common.add_argument(
        "-i",
        "--inventory",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="inventory file (default: $NIXHERD_INVENTORY, else inventory.toml in the current "
        "directory or its parents up to the repository root)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show a traceback on internal errors",
    )
    return common


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, a parser holding just that command, which is
    all that running it needs (importing and configuring every command module costs more than
    `nixherd nodes` spends on its own work)."""
    common = common_options()
    parser = Parser(
        prog="nixherd",
        description="Deploy NixOS configurations to a fleet of machines over SSH.",
        parents=[common],
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = _load(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common])
        module.configure(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


# The common options that take a value (the word after them is never the command).
_VALUE_OPTIONS = frozenset({"-i", "--inventory"})


def requested_command(args: Sequence[str]) -> str | None:
    """The command named on the command line; None when the full parser is needed (no command
    yet, --help or --version first, or a word that is no command, for argparse to report)."""
    skip = False
    for token in args:
        if skip:
            skip = False
        elif token in ("-h", "--help", "--version", "--"):
            return None
        elif token.startswith("-"):
            skip = token in _VALUE_OPTIONS
        else:
            return token if token in COMMANDS else None
    return None


def inventory_path(args: argparse.Namespace, *, required: bool = True) -> str:
    """The inventory file chosen by --inventory, $NIXHERD_INVENTORY, or found: `inventory.toml`
    in the current directory or its parents up to the repository root (named as found: as
    before when it is here, by its path when it is in a parent). None found: a UsageError
    saying where it was looked for, or with `required` False, `inventory.toml` (here)."""
    given: str | None = getattr(args, "inventory", None)
    chosen = given or os.environ.get("NIXHERD_INVENTORY")
    if chosen:
        return chosen
    from pathlib import Path

    from nixherd.errors import UsageError
    from nixherd.inventory.load import INVENTORY_NAME, find

    here = Path.cwd()
    search = find(here)
    if search.found is not None:
        return INVENTORY_NAME if search.found.parent == here else str(search.found)
    if not required:
        return INVENTORY_NAME
    where = (
        f"up to the repository root {search.stop}" if search.in_repository else "(no repository)"
    )
    raise UsageError(
        f"no {INVENTORY_NAME} in {here} or its parents {where}\n"
        "give one with -i PATH or $NIXHERD_INVENTORY"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None and "_ARGCOMPLETE" in os.environ:
        # Started by a completion script to answer a TAB: argcomplete answers and exits.
        from nixherd.cli import completion

        completion.complete(build_parser, requested_command, inventory_path)
        return 1
    debug = "--debug" in args_list
    from nixherd.errors import NixherdError

    try:
        args = build_parser(requested_command(args_list)).parse_args(args_list)
        code: int = args._run(args)
        return code
    except NixherdError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(exc.render())
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except BrokenPipeError:
        # A closed pipe (`nixherd nodes | head`) is not an error worth a message.
        _silence_stdout()
        return 0
    except Exception as exc:
        if debug:
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)")
        return 70


def _print_error(message: str) -> None:
    lines = message.splitlines() or [""]
    prefix = "nixherd: error: "
    sys.stderr.write(prefix + lines[0] + "\n")
    for line in lines[1:]:
        sys.stderr.write("  " + line + "\n")
    sys.stderr.flush()


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
