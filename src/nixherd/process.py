"""The one place that launches subprocesses, local or (through `ssh.py`) remote.

Argv lists only, never a shell. Children run in their own session so that a Ctrl-C on the
terminal reaches nixherd alone: nixherd decides what to stop, and an activation in flight is
never cut by the keyboard.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from nixherd.errors import CommandError

LineCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished command left: its argv, exit code and output (stderr merged or apart)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    on_line: LineCallback | None = None,
    what: str | None = None,
    node: str | None = None,
) -> Result:
    """Run `argv` to completion and return its result.

    With `on_line`, stdout and stderr are merged and every line is handed to the callback as it
    arrives (for live logs); otherwise both are captured apart. `check` raises CommandError on a
    non-zero exit or a timeout, carrying the command line and the output's tail.
    """
    args = tuple(argv)
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if on_line else subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(args, 127, str(exc), what=what, node=node) from exc
    try:
        if on_line is None:
            try:
                out, err = proc.communicate(data, timeout=timeout)
            except subprocess.TimeoutExpired:
                out, err = _abandon(proc)
                raise CommandError(
                    args, None, _text(out) + _text(err), what=what, node=node
                ) from None
            result = Result(args, proc.returncode, _text(out), _text(err))
        else:
            result = _run_streaming(proc, args, data, timeout, on_line, what, node)
    except KeyboardInterrupt:
        # Only the main thread sees Ctrl-C: nobody will read this command's result, and in its
        # own session it would otherwise outlive nixherd (a `nix eval` or build left running).
        _kill_group(proc)
        proc.wait()
        raise
    if check and not result.ok:
        raise CommandError(
            args, result.returncode, result.stdout + result.stderr, what=what, node=node
        )
    return result


def _run_streaming(
    proc: subprocess.Popen[bytes],
    args: tuple[str, ...],
    data: bytes | None,
    timeout: float | None,
    on_line: LineCallback,
    what: str | None,
    node: str | None,
) -> Result:
    if data is not None and proc.stdin is not None:
        writer = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)
        writer.start()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    lines: list[str] = []
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                if timed_out:
                    break  # killed, and the pipe still open after the grace period: give up
                timed_out = True
                _kill_group(proc)
                deadline = time.monotonic() + _DRAIN_SECONDS
                continue
            if not selector.select(wait):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = _text(raw)
                lines.append(line)
                on_line(line)
    if pending:
        lines.append(_text(pending))
        on_line(lines[-1])
    proc.stdout.close()
    proc.wait()
    output = "\n".join(lines) + ("\n" if lines else "")
    if timed_out:
        raise CommandError(args, None, output, what=what, node=node)
    return Result(args, proc.returncode, output, "")


# After a kill, how long to wait for the pipes to close. A multiplexed ssh has handed our pipe to
# its ControlMaster, which holds it open while the remote command runs: past this, stop reading.
_DRAIN_SECONDS = 5.0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and everything in its session (it was started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _abandon(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Kill a command that ran out of time and collect what it printed, without hanging."""
    _kill_group(proc)
    try:
        out, err = proc.communicate(timeout=_DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        proc.wait()
        return b"", b""
    return out or b"", err or b""


def _feed(stream: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        stream.write(data)
    with contextlib.suppress(BrokenPipeError):
        stream.close()


@dataclass(frozen=True, slots=True)
class BytesResult:
    """A finished command whose stdout stays bytes (a secret): never shown, never in an error."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes = field(repr=False)
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_bytes(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    what: str | None = None,
    node: str | None = None,
) -> BytesResult:
    """Run `argv` and capture its stdout as bytes; the caller decides what a non-zero exit means.

    For secret sources: an error raised here (start failure, timeout) carries stderr only, never
    stdout, so the secret cannot reach a message or a log.
    """
    args = tuple(argv)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(args, 127, str(exc), what=what, node=node) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _, err = _abandon(proc)
        raise CommandError(args, None, _text(err), what=what, node=node) from None
    return BytesResult(args, proc.returncode, out, _text(err))


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    log_path: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process detached from nixherd's session (lab hosts); return it."""
    args = tuple(argv)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(args, 127, str(exc)) from exc
    finally:
        if log_path and not isinstance(log, int):
            log.close()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")
