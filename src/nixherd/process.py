"""The one place that launches subprocesses, local or (through `ssh.py`) remote.

Argv lists only, never a shell. Children run in their own session so that a Ctrl-C on the
terminal reaches nixherd alone: nixherd decides what to stop, and an activation in flight is
never cut by the keyboard.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
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
                proc.kill()
                out, err = proc.communicate()
                raise CommandError(
                    args, None, _text(out) + _text(err), what=what, node=node
                ) from None
            result = Result(args, proc.returncode, _text(out), _text(err))
        else:
            result = _run_streaming(proc, args, data, timeout, on_line, what, node)
    except KeyboardInterrupt:
        # Only the main thread sees Ctrl-C: nobody will read this command's result, and in its
        # own session it would otherwise outlive nixherd (a `nix eval` or build left running).
        proc.kill()
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
    timer: threading.Timer | None = None
    timed_out = threading.Event()
    if timeout is not None:

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = _text(raw).rstrip("\n")
            lines.append(line)
            on_line(line)
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        proc.stdout.close()
        proc.wait()
    output = "\n".join(lines) + ("\n" if lines else "")
    if timed_out.is_set():
        raise CommandError(args, None, output, what=what, node=node)
    return Result(args, proc.returncode, output, "")


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
        proc.kill()
        _, err = proc.communicate()
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
