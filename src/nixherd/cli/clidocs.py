"""The command-line reference, derived from the parser: docs/cli.md (here) and the man page
(nixherd.cli.manpage), written by scripts/gen-cli-docs.py.

Every command, argument and flag comes from the parser itself, so a flag added anywhere shows up
on the next generation; a test fails while the checked-in files differ from what this derives.
What the parser cannot say is declared here, next to it: each number's bound (by its argparse
`type`, one of nixherd.cli.numbers), the environment variables read and the exit codes (tests
check both against the source).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nixherd import __version__
from nixherd.cli import numbers

# The bound of each number parser, as the docs say it.
BOUNDS: dict[Callable[[str], Any], str] = {
    numbers.seconds: f"seconds, {numbers.SECONDS_RULE}; decimal, never nan/inf",
    numbers.parallel: f"0..{numbers.MAX_PARALLEL} (0: all nodes at once)",
    numbers.count: f"0..{numbers.MAX_NODES}",
    numbers.hosts: f"1..{numbers.MAX_PORT}",
    numbers.port: f"1..{numbers.MAX_PORT}",
    numbers.port_or_false: f"1..{numbers.MAX_PORT}, or false (ssh decides)",
    numbers.max_jobs: f"'auto' or 0..{numbers.MAX_JOBS}",
}
# Values checked after parsing (nixherd.fleet.rollout.Amount), named by their metavar.
BOUNDS_BY_METAVAR = {"N|P%": "N: 0..999999999; P%: 0..100"}
# Metavars of numbers: such a flag without a bound above is an error of the generator.
NUMBER_METAVARS = frozenset({"N", "S", "P", "N|P%"})

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    (
        "NIXHERD_INVENTORY",
        "the inventory file when `-i` is not given (default: the nearest inventory.toml in the "
        "current directory or its parents, up to the repository root)",
    ),
    (
        "NIXHERD_FLAKE",
        "the fleet's flake when `--flake` is not given (default: the inventory's directory)",
    ),
    (
        "NIXHERD_LAB_DIR",
        "the lab's state directory when `--dir` is not given (default ./lab-state)",
    ),
    (
        "NIXHERD_CACHE_DIR",
        "where parsed inventories are cached (default $XDG_CACHE_HOME/nixherd/parsed)",
    ),
    ("NIXHERD_NO_CACHE", "set (non-empty): never cache parsed inventories"),
    ("XDG_CACHE_HOME", "the base of the parse cache (default ~/.cache)"),
    (
        "NIXHERD_STATE_DIR",
        "where run logs and --keep-result GC roots go, one directory per inventory (default "
        "$XDG_STATE_HOME/nixherd)",
    ),
    ("XDG_STATE_HOME", "the base of nixherd's state directory (default ~/.local/state)"),
    ("NO_COLOR", "set: no colours and no live view, plain lines"),
    ("TERM", "`dumb`: no live view"),
    (
        "NIX_CONFIG",
        "read by nix itself: Nix settings that must not be on the command line (access-tokens)",
    ),
    ("NIXHERD_LAB_HOST", "set by the lab inside each of its hosts (its name); not read by nixherd"),
)

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success: every selected node reached its goal"),
    (
        1,
        "failure: a node failed (the summary says which and why), a command nixherd ran "
        "failed (nix, ssh), `check --eval` found a node that does not evaluate, `lab status` a "
        "host that is not up, or `status --exit-code` a node it cannot reach",
    ),
    (
        2,
        "bad input: command line, inventory (file and key named), `--on` selection; nothing "
        "was started",
    ),
    (3, "`status --exit-code`: a node runs another system than the flake's (drift)"),
    (70, "internal error (a bug: `--debug` shows the traceback)"),
    (
        130,
        "interrupted (Ctrl-C): nodes not yet activated were left untouched; after a second "
        "Ctrl-C the activations in flight were aborted (rolled back), each node's state reported",
    ),
)

COMPLETION: tuple[tuple[str, str], ...] = (
    (
        "bash (with bash-completion)",
        "nixherd completion bash > ~/.local/share/bash-completion/completions/nixherd",
    ),
    ("bash, else: in ~/.bashrc", 'eval "$(nixherd completion bash)"'),
    ("zsh", 'nixherd completion zsh > "${fpath[1]}/_nixherd"'),
    ("zsh, else: in ~/.zshrc after compinit", 'eval "$(nixherd completion zsh)"'),
    ("fish", "nixherd completion fish > ~/.config/fish/completions/nixherd.fish"),
)


@dataclass(frozen=True, slots=True)
class Option:
    """One argument or flag of a command."""

    names: tuple[str, ...]  # ("-i", "--inventory"); a positional: ()
    value: str  # its metavar(s), "" for a switch
    bound: str  # the accepted values: a range or the choices, "" if any text
    help: str

    @property
    def label(self) -> str:
        return ", ".join(self.names) if self.names else self.value


@dataclass(frozen=True, slots=True)
class Command:
    """One command (`apply`) or subcommand (`lab up`) with what it takes."""

    name: str
    help: str
    usage: str
    options: tuple[Option, ...]


@dataclass(frozen=True, slots=True)
class Reference:
    """Everything the reference says, in order."""

    version: str
    description: str
    usage: str
    global_options: tuple[Option, ...]
    commands: tuple[Command, ...]


def reference(parser: argparse.ArgumentParser) -> Reference:
    """The reference of `parser` (the whole one: nixherd.cli.build_parser())."""
    # The top-level options (-h included) are every command's too: documented once.
    shared = frozenset(name for action in parser._actions for name in action.option_strings)
    return Reference(
        version=__version__,
        description=parser.description or "",
        usage=_usage(parser),
        global_options=tuple(_options(parser, frozenset())),
        commands=tuple(_commands(parser, shared)),
    )


def _commands(parser: argparse.ArgumentParser, shared: frozenset[str]) -> Iterator[Command]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            full = sub.prog.split(" ", 1)[1]  # "nixherd lab up" -> "lab up"
            yield Command(full, helps.get(name, ""), _usage(sub), tuple(_options(sub, shared)))
            yield from _commands(sub, shared)


def _options(parser: argparse.ArgumentParser, shared: frozenset[str]) -> Iterator[Option]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings and set(action.option_strings) <= shared:
            continue  # a global option, documented once
        yield Option(
            names=tuple(action.option_strings),
            value=_value(action),
            bound=_bound(action),
            help=_help(parser, action),
        )


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    metavar = action.metavar
    if isinstance(metavar, tuple):
        return " ".join(metavar)
    if metavar is None:
        metavar = action.dest.upper() if action.option_strings else action.dest
    if action.nargs == "?" and action.option_strings:
        return ""  # `--json` (nargs="?" only to refuse the old `--json FILE`)
    return metavar


def _bound(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of: " + ", ".join(str(choice) for choice in action.choices)
    bound = BOUNDS.get(action.type) if callable(action.type) else None
    if bound is None and isinstance(action.metavar, str):
        bound = BOUNDS_BY_METAVAR.get(action.metavar)
    if bound is None and action.metavar in NUMBER_METAVARS:
        # A number without a declared bound: say it here, where the bounds are declared.
        raise ValueError(f"{'/'.join(action.option_strings)}: no bound in nixherd.cli.clidocs")
    return bound or ""


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%" not in text:
        return text
    params: dict[str, Any] = {
        key: value for key, value in vars(action).items() if value is not argparse.SUPPRESS
    }
    params["prog"] = parser.prog
    return text % params


def _usage(parser: argparse.ArgumentParser) -> str:
    # One line, whatever the terminal's width (argparse reads $COLUMNS otherwise).
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return " ".join(formatter.format_help().split())


# --- markdown -------------------------------------------------------------------------------


def markdown(ref: Reference) -> str:
    """docs/cli.md."""
    out = [
        "# The nixherd command line",
        "",
        "<!-- Generated by scripts/gen-cli-docs.py from the parser (src/nixherd/cli): do not "
        "edit; run the script after changing a command or flag. -->",
        "",
        f"{ref.description} Version {ref.version}; also `man nixherd` (docs/nixherd.1).",
        "",
        f"    {ref.usage}",
        "",
        "A mistyped command or flag is named with the nearest one (`nixherd aply`: unknown "
        "command 'aply'; did you mean 'apply'?), exit 2.",
        "",
        "## Global options",
        "",
        "`-i` and `--debug` are accepted before or after the command's name, `-h` after any "
        "command.",
        "",
        *_table(ref.global_options),
        "",
        "## Commands",
        "",
        "| command | what it does |",
        "|---|---|",
        *(
            f"| [`{c.name}`](#nixherd-{c.name.replace(' ', '-')}) | {_cell(c.help)} |"
            for c in ref.commands
        ),
    ]
    for command in ref.commands:
        out += ["", f"### nixherd {command.name}", "", _cell(command.help), ""]
        out += ["```", command.usage, "```", ""]
        out += _table(command.options) if command.options else ["No arguments."]
    out += ["", "## Environment", "", "| variable | effect |", "|---|---|"]
    out += [f"| `{name}` | {_cell(text)} |" for name, text in ENVIRONMENT]
    out += ["", "## Exit status", "", "| code | meaning |", "|---|---|"]
    out += [f"| {code} | {_cell(text)} |" for code, text in EXIT_CODES]
    out += [
        "",
        "## Shell completion",
        "",
        "`nixherd completion SHELL` prints the script (argcomplete's): commands, flags, choices "
        "and, for `--on` and NODE, the inventory's node names (and `@tags`, `role:` names). "
        "Install it once:",
        "",
        "```sh",
        *(line for shell, command in COMPLETION for line in (f"# {shell}", command)),
        "```",
        "",
        "Each TAB runs `nixherd` with the line (about as long as `nixherd nodes`).",
        "",
    ]
    return "\n".join(out)


def _table(options: tuple[Option, ...]) -> list[str]:
    rows = ["| argument | value | accepted | description |", "|---|---|---|---|"]
    for option in options:
        label = f"`{option.label}`"
        value = f"`{option.value}`" if option.value and option.names else ""
        rows.append(f"| {label} | {_cell(value)} | {_cell(option.bound)} | {_cell(option.help)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
