"""Rebooting a node after a deploy and waiting until it is back on the expected system."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from nixherd.errors import CommandError, NixherdError
from nixherd.node.probe import NodeState, UnreachableError, probe
from nixherd.run import process
from nixherd.run.ssh import Connection

DEFAULT_TIMEOUT = 300.0
POLL_INTERVAL = 1.0
# The reboot runs a moment after the ssh command returns, so the command itself ends cleanly.
REBOOT_SCRIPT = "nohup sh -c 'sleep 1; reboot' >/dev/null 2>&1 &"


class RebootError(NixherdError):
    pass


def reboot(
    conn: Connection,
    *,
    before: str,
    expect: str | None,
    timeout: float = DEFAULT_TIMEOUT,
    on_line: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> NodeState:
    """Reboot the node, wait for a new boot (`before` is the old boot marker), return its state.

    Polling uses fresh connections: the shared master dies with the old boot. With `expect`, the
    node must come back running that system.
    """
    try:
        conn.run(["sh", "-c", REBOOT_SCRIPT], elevate=True, timeout=30, what="reboot")
    except CommandError as exc:
        # The link may drop before ssh reports the command's status; the poll below decides.
        if exc.returncode not in (None, 255):
            raise RebootError(f"reboot failed: {exc.tail(3) or exc.command_line}") from exc
    node = conn.target.node
    _drop_master(conn)
    on_line(f"waiting for {node} to come back (boot {before}, up to {timeout:g} s)")
    started = clock()
    deadline = started + timeout
    while True:
        sleep(POLL_INTERVAL)
        remaining = deadline - clock()
        if remaining <= 0:
            raise RebootError(
                f"{node} did not come back within {timeout:g} s after the reboot "
                f"(still boot {before}, or no answer)"
            )
        try:
            state = probe(conn, multiplex=False, timeout=min(remaining, 30.0))
        except (UnreachableError, CommandError):
            continue
        if state.boot != before:
            break
    on_line(
        f"{node} back up after {clock() - started:.1f} s (boot {state.boot}); "
        f"running {state.current or 'no system'}"
    )
    if expect is not None and state.current != expect:
        raise RebootError(
            f"after the reboot {node} runs {state.current or 'no system'}, expected {expect}"
        )
    return state


def _drop_master(conn: Connection) -> None:
    """Stop the ControlMaster of the old boot: the steps after the reboot (keys, checks) must
    log in anew, not ride a connection to a machine that is gone (its end may take ssh's
    keep-alive, 15 s, to notice)."""
    if not os.path.exists(conn.control_path):
        return
    # A master that does not answer in time is the guardian's to end with the run.
    with contextlib.suppress(CommandError):
        process.run(
            ["ssh", *conn.options(), "-O", "exit", "--", conn.target.destination],
            check=False,
            timeout=10,
            what="ssh -O exit",
            node=conn.target.node,
        )
