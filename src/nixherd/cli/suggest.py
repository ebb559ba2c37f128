"""The argument parser of every nixherd command: argparse, with its errors naming what was
mistyped and the nearest spelling.

argparse alone reports a mistyped flag late and under another name: in `apply --paralel 3` it sets
`--paralel` aside as unknown, takes `3` for the GOAL and fails on that ("argument GOAL: invalid
choice: '3'"). Here every error first looks for a flag this parser does not know among its own
words, and names it: "unknown flag --paralel; did you mean --parallel?". Commands and choices get
the same: "unknown command 'aply'; did you mean 'apply'?". Exit 2 as for any usage error.

Standard library only: this runs on every start, `nixherd nodes` included.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

# argparse reads a word like these as a value, never as a flag (when no option looks like one).
_NEGATIVE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$").match


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word`, if one is close enough to be a likely typo."""
    import difflib  # only on an error: `nixherd nodes` starts without it

    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors name a mistyped flag, command or choice.

    Subparsers are made of the same class (argparse's default `parser_class`), so each command's
    parser judges its own words.
    """

    # The words this parser was given (a subparser: the words after its command's name).
    _given: tuple[str, ...] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        self._given = tuple(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        # argparse's own verdict: these words matched no option of this parser.
        for word in extras:
            if self._unknown(word):
                self.error(self._unknown_flag(word))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        # Whatever argparse tripped over, a flag this parser does not know came first: in
        # `apply --paralel 3` the GOAL error is only a consequence of it.
        for word in self._own_flags():
            if self._unknown(word):
                message = self._unknown_flag(word)
                break
        super().error(message)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(choice) for choice in choices]
        guess = nearest(str(value), names)
        if isinstance(action, argparse._SubParsersAction):
            # "nixherd lab" -> "lab ": a subcommand is named with its command.
            prefix = "".join(word + " " for word in self.prog.split()[1:])
            if guess is None:
                message = f"unknown command '{prefix}{value}' (commands: {', '.join(names)})"
            else:
                message = f"unknown command '{prefix}{value}'; did you mean '{prefix}{guess}'?"
        else:
            what = action.option_strings[-1] if action.option_strings else action.metavar
            hint = "" if guess is None else f"; did you mean '{guess}'?"
            message = f"invalid {what or action.dest} '{value}'{hint}"
            message += f" (choose from {', '.join(names)})"
        raise argparse.ArgumentError(None, message)

    def _own_flags(self) -> list[str]:
        """The flag-like words given to this parser itself: up to `--` or its subcommand's
        name, and without the values of the options that take one (`--on -x` is a value)."""
        commands: set[str] = set()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands.update(action.choices)
        flags: list[str] = []
        values = 0
        for word in self._given:
            if values:
                values -= 1
                continue
            if word == "--" or word in commands:
                break
            if not _flag_like(word):
                continue
            flags.append(word)
            option = self._option_string_actions.get(word.split("=", 1)[0])
            if option is not None and "=" not in word:
                nargs = option.nargs
                values = 1 if nargs is None else nargs if isinstance(nargs, int) else 0
        return flags

    def _unknown(self, word: str) -> bool:
        """A flag-like word naming no option of this parser, not even as argparse's abbreviation
        or as a short option with its value attached (`-n3`)."""
        if not _flag_like(word):
            return False
        name = word.split("=", 1)[0]
        known = self._option_string_actions
        if name in known:
            return False
        if not name.startswith("--"):
            return word[:2] not in known
        return not (self.allow_abbrev and any(option.startswith(name) for option in known))

    def _unknown_flag(self, word: str) -> str:
        name = word.split("=", 1)[0]
        long_names = [option for option in self._option_string_actions if option.startswith("--")]
        guess = nearest(name if name.startswith("--") else "-" + name, long_names)
        if guess is None:
            return f"unknown flag {name} (see {self.prog} --help)"
        return f"unknown flag {name}; did you mean {guess}?"


def _flag_like(word: str) -> bool:
    # As argparse reads words: `-` alone, negative numbers and words with a space are values.
    return word.startswith("-") and word != "-" and " " not in word and not _NEGATIVE_NUMBER(word)
