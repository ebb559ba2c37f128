"""The error hierarchy of nixherd, rendered once by the CLI.

    NixherdError                 anything nixherd reports to the user; exit code 1
    ├── UsageError               bad command-line use; exit code 2
    ├── InventoryError           the inventory is invalid: every Problem found; exit code 2
    ├── SelectionError           a bad `--on` expression, or one that matches nothing; exit code 2
    ├── CommandError             an external command (nix, ssh, ...) failed: argv, code, output tail
    ├── HostKeyError             ssh refused a node's host key (unknown or changed): the key
    │                            offered and how to trust it (run/hostkeys.py)
    ├── LabError                 the lab could not be brought up / down
    └── NodesFailedError         one or more nodes failed; the per-node results are already reported

Library errors (OSError, subprocess, TOML parsers) are converted at the boundary with
`raise X from exc`; nothing else escapes to the user (a traceback only with `--debug`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


class NixherdError(Exception):
    """Base of every error nixherd shows to the user."""

    exit_code: int = 1

    def render(self) -> str:
        """The message as the CLI prints it (may span lines)."""
        return str(self)


class UsageError(NixherdError):
    exit_code = 2


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an inventory: where it is and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class InventoryError(NixherdError):
    exit_code = 2

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SelectionError(NixherdError):
    exit_code = 2


class CommandError(NixherdError):
    """An external command failed; the message carries a copy-pasteable command line."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        output: str = "",
        *,
        what: str | None = None,
        node: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        self.what = what
        self.node = node
        super().__init__(self.render())

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])

    def render(self) -> str:
        prefix = f"{self.node}: " if self.node else ""
        status = "timed out" if self.returncode is None else f"exited with {self.returncode}"
        head = f"{prefix}{self.what or 'command'} failed ({status}): {self.command_line}"
        tail = self.tail()
        return f"{head}\n{tail}" if tail else head


class HostKeyError(NixherdError):
    """ssh refused the node's host key; the message says which key and what to do."""


class LabError(NixherdError):
    pass


class NodesFailedError(NixherdError):
    """Some nodes failed; their errors were already shown per node."""
