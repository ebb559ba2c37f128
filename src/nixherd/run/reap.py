"""Waiting for a child with wait4(2): its exit code, and what `wait` does not tell, its peak
memory (the evaluation's figures, fleet/evaluate.py)."""

from __future__ import annotations

import os
import subprocess


def reap(proc: subprocess.Popen[bytes]) -> int | None:
    """Wait for `proc`; its peak resident memory in bytes (ru_maxrss, which counts the
    descendants it waited for), or None when it was reaped already (`Popen.kill` polls first,
    and may reap a child that died of the group kill). Popen learns the exit code: it never
    waits a second time."""
    if proc.returncode is not None:
        return None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped behind Popen's back: Popen knows how to say so
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024  # Linux counts KiB
