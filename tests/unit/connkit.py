"""A Connection that runs the 'remote' argv on this machine, for the keys and data tests.

The remote scripts run for real, against a temp dir, with no ssh in between (the lab tests do
the same over real ssh).
"""

from __future__ import annotations

from collections.abc import Sequence

from nixherd import process
from nixherd.process import LineCallback, Result
from nixherd.ssh import Connection, Target


class LocalConnection(Connection):
    """Runs the 'remote' argv locally and records every call (argv and stdin)."""

    def __init__(self, control_dir: str) -> None:
        super().__init__(Target(node="n1", host="127.0.0.1"), control_dir=control_dir)
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.modes: list[tuple[bool, bool]] = []  # (elevate, multiplex) of each call

    def run(
        self,
        remote: Sequence[str],
        *,
        elevate: bool = False,
        multiplex: bool = True,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: LineCallback | None = None,
        what: str | None = None,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        self.calls.append((list(remote), data))
        self.modes.append((elevate, multiplex))
        return process.run(
            remote, input=input, timeout=timeout, check=check, on_line=on_line, what=what
        )
