"""`exec`: one command on many nodes in parallel, output per node, exit code per node."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from nixherd.errors import CommandError, UsageError
from nixherd.events import (
    EventSink,
    LogLine,
    Outcome,
    Stage,
    StageFinished,
    StageStarted,
    discard,
)
from nixherd.fleet.fanout import report_per_node
from nixherd.fleet.plan import DeployNode, target_of
from nixherd.fleet.report import ErrorInfo, NodeResult, RunReport
from nixherd.run.ssh import Connection

SSH_FAILED = 255


def exec_everywhere(
    nodes: Sequence[DeployNode],
    argv: Sequence[str],
    *,
    ssh_config: str | None = None,
    parallel: int = 10,
    elevate: bool = False,
    timeout: float | None = None,
    emit: EventSink = discard,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Run `argv` (quoted once, at the ssh boundary) on every node; a result per node.

    Each node gets one plain ssh connection: a single command gains nothing from a master.
    """
    if not argv:
        raise UsageError("exec: no command given (put it after --)")
    by_name = {n.name: n for n in nodes}
    command = tuple(argv)

    def work(name: str) -> NodeResult:
        node = by_name[name]
        emit(StageStarted(name, Stage.EXEC))
        started = time.monotonic()
        outcome, code, error = Outcome.FAILED, None, None
        try:
            target = target_of(node, ssh_config)
            conn = Connection(target)
            try:
                result = conn.run(
                    command,
                    elevate=elevate,
                    multiplex=False,
                    check=False,
                    timeout=timeout,
                    on_line=lambda line: emit(LogLine(name, line)),
                    what=command[0],
                )
            finally:
                conn.close()
            code = result.returncode
            if code == 0:
                outcome = Outcome.OK
            else:
                tail = "\n".join(result.stdout.rstrip().splitlines()[-5:]) or None
                why = "ssh failed or the command exited with 255" if code == SSH_FAILED else None
                error = ErrorInfo(why or f"exited with {code}", returncode=code, output=tail)
        except (CommandError, UsageError) as exc:
            error = ErrorInfo.from_exception(exc)
        seconds = time.monotonic() - started
        emit(StageFinished(name, Stage.EXEC, seconds))
        detail = f"exit {code}" if code is not None else None
        return NodeResult(
            node=name,
            outcome=outcome,
            stages={Stage.EXEC.value: seconds},
            error=error,
            detail=detail,
            exit_code=code,
        )

    return report_per_node(
        [n.name for n in nodes],
        work,
        command="exec",
        options={"argv": list(command), "parallel": parallel, "elevate": elevate},
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    )
