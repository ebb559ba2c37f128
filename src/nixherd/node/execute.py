"""`exec` on one node: one command over one plain ssh connection, its output streamed."""

from __future__ import annotations

from collections.abc import Sequence

from nixherd.events import EventSink, LogLine
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

# What ssh exits with when it fails itself (and what a remote command exiting 255 looks like).
SSH_FAILED = 255


def run_command(
    target: Target,
    argv: Sequence[str],
    *,
    elevate: bool = False,
    timeout: float | None = None,
    emit: EventSink,
) -> Result:
    """Run `argv` (quoted once, at the ssh boundary) on the node; every output line is emitted.

    One plain ssh connection: a single command gains nothing from a master. The command's exit
    code is the result's (no CommandError for a non-zero one); ssh that cannot start raises.
    """
    command = tuple(argv)
    conn = Connection(target)
    try:
        return conn.run(
            command,
            elevate=elevate,
            multiplex=False,
            check=False,
            timeout=timeout,
            on_line=lambda line: emit(LogLine(target.node, line)),
            what=command[0],
        )
    finally:
        conn.close()
