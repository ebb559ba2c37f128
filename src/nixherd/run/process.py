"""The one place that launches subprocesses, local or (through `ssh.py`) remote.

Argv lists only, never a shell. Children run in their own session so that a Ctrl-C on the
terminal reaches nixherd alone: nixherd decides what to stop, and an activation in flight is
never cut by the keyboard.

Children die with nixherd, however it ends (a SIGKILL included). The rule: every command started
by `run` or `run_bytes` is announced to a guardian, a small process of nixherd's own started at the
first command, by its pid and start time; every directory that must not outlive the run (ssh's
control directories, `own_directory`) is announced too. The guardian holds the read end of a pipe
whose only write end is in nixherd: when nixherd is gone, by exit or by kill, the pipe ends and the
guardian kills the session of each command still running (the pid checked against its start time,
so a reused pid is never hit), tells each ssh ControlMaster in an announced directory to exit
(through its socket: the master daemonizes itself, so it is neither a child nor in a child's
session) and removes the directories. `spawn` (lab hosts) is not announced: those outlive nixherd
on purpose.

Why not PR_SET_PDEATHSIG: it fires when the *thread* that started the child ends, and nixherd
starts commands from pool threads (probes, per-node pipelines) that end before the commands they
started may (a ControlMaster opened by a probe serves the node's whole pipeline); and it cannot
reach the daemonized master at all. The pipe ends only with the process, whichever thread started
what. What remains: a child started in the instant between its fork and its announcement, and
leftovers of a run whose guardian was killed too (by hand, with the same SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nixherd.errors import CommandError
from nixherd.run.reap import reap

LineCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished command left: its argv, exit code and output (stderr merged or apart)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    max_rss: int | None = None  # peak memory in bytes (wait4's ru_maxrss), with `on_line`

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def _start(
    args: tuple[str, ...],
    *,
    stdin: int,
    stderr: int,
    env: Mapping[str, str] | None,
    cwd: str | None,
    what: str | None,
    node: str | None,
) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start `args` in a session of its own, stdout piped, announced to the guardian; the
    process and its start time (for `_GUARDIAN.ended`). CommandError (127) if it cannot start."""
    try:
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(args, 127, str(exc), what=what, node=node) from exc
    return proc, _GUARDIAN.started(proc.pid)


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
    proc, born = _start(
        args,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if on_line else subprocess.PIPE,
        env=env,
        cwd=cwd,
        what=what,
        node=node,
    )
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
    finally:
        _GUARDIAN.ended(proc, born)
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
    max_rss = reap(proc)  # not wait(): wait4 also tells the peak memory
    output = "\n".join(lines) + ("\n" if lines else "")
    if timed_out:
        raise CommandError(args, None, output, what=what, node=node)
    return Result(args, proc.returncode, output, "", max_rss)


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
    proc, born = _start(
        args,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        what=what,
        node=node,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _, err = _abandon(proc)
        raise CommandError(args, None, _text(err), what=what, node=node) from None
    finally:
        _GUARDIAN.ended(proc, born)
    return BytesResult(args, proc.returncode, out, _text(err))


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    log_path: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process detached from nixherd's session (lab hosts); return it.

    Unlike `run`'s commands, it is not announced to the guardian: it outlives nixherd on purpose.
    """
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
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data or ""


# --- the guardian: nothing of a run outlives it -----------------------------------------------


def own_directory(path: str) -> None:
    """Have `path` (a directory nixherd just created) removed if nixherd dies before it does."""
    _GUARDIAN.tell("d", path)


def disown_directory(path: str) -> None:
    """`path` is gone (or no longer nixherd's to remove): forget it."""
    _GUARDIAN.tell("r", path)


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such process:
    with the pid, it names one process for good (a pid alone may be reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold anything: count fields after the last ')'.
    return int(data.rsplit(b")", 1)[1].split()[19])


class _Guardian:
    """nixherd's side of the guardian: started on first use, told one line per event.

    Lines are `+ PID START`, `- PID START`, `d PATH`, `r PATH`; each is one write(2) shorter
    than PIPE_BUF, so lines written by concurrent threads never interleave. The start time rides
    with `-` too: a late `-` of a reaped command must not cancel a new command given its pid.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._owner = 0  # the pid the pipe belongs to: a fork of nixherd starts its own guardian

    def started(self, pid: int) -> int | None:
        """Announce a command just started; its start time, or None if it is already gone."""
        born = start_time(pid)
        if born is not None:
            self.tell("+", f"{pid} {born}")
        return born

    def ended(self, proc: subprocess.Popen[bytes], born: int | None) -> None:
        # Only once reaped: a command still running when its caller gave up stays announced.
        if born is not None and proc.poll() is not None:
            self.tell("-", f"{proc.pid} {born}")

    def tell(self, kind: str, arg: str) -> None:
        if "\n" in arg:
            raise ValueError(f"a guardian line may not hold a newline: {arg!r}")
        fd = self._pipe()
        if fd is None:
            return
        with contextlib.suppress(OSError):
            # EPIPE: the guardian was killed by hand; nixherd goes on without it.
            os.write(fd, f"{kind} {arg}\n".encode())

    def _pipe(self) -> int | None:
        if self._owner == os.getpid():
            return self._fd
        with self._lock:
            if self._owner != os.getpid():
                self._fd = self._start()
                self._owner = os.getpid()
            return self._fd

    def _start(self) -> int | None:
        read, write = os.pipe()  # close-on-exec: no other child holds the write end
        # The directory holding the nixherd package (this file is nixherd/run/process.py).
        package = str(Path(__file__).resolve().parents[2])
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from nixherd.run import process; process.guard()"
        )
        try:
            # posix_spawn, not Popen: the guardian is meant to run until nixherd exits, and a Popen
            # object still running at exit is reported as a leak. -I -S: nothing of the
            # environment or site-packages, it needs this module only. Its own session: a Ctrl-C
            # or a hangup on nixherd's terminal spares it.
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-c", code, package],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        except OSError:
            os.close(write)
            return None
        finally:
            os.close(read)
        return write


_GUARDIAN = _Guardian()


def guard() -> None:
    """The guardian's main: record what nixherd announces on stdin until it ends, then clean up.

    Runs in a process of its own (`_Guardian._start`); stdin ends when nixherd is gone.
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    os.chdir("/")  # hold no directory of nixherd's
    # Anything inherited without close-on-exec (a pipe of whoever started nixherd) is let go, so
    # that the guardian never keeps someone else waiting for an end of file.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    children: dict[int, int] = {}
    directories: dict[str, None] = {}
    for raw in sys.stdin.buffer:
        kind, _, arg = raw.decode(errors="replace").rstrip("\n").partition(" ")
        try:
            if kind == "+":
                pid, born = arg.split()
                children[int(pid)] = int(born)
            elif kind == "-":
                pid, born = arg.split()
                if children.get(int(pid)) == int(born):
                    del children[int(pid)]
            elif kind == "d" and os.path.isabs(arg):
                directories[arg] = None
            elif kind == "r":
                directories.pop(arg, None)
        except ValueError:
            continue  # a torn line (nixherd killed mid-write): the rest still counts
    for pid, born in children.items():
        _kill_session(pid, born)
    for path in directories:
        _stop_masters(path)
        shutil.rmtree(path, ignore_errors=True)


def _kill_session(pid: int, born: int) -> None:
    now = start_time(pid)
    if now is not None and now != born:
        return  # the pid was reused: that process is not ours
    # The command leads its own session and group (start_new_session). Even with the leader
    # gone, a group with its id can only be what is left of it: a pid is not reused while a
    # group of that id exists.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _stop_masters(path: str) -> None:
    """Tell every ssh ControlMaster listening in `path` to exit (it removes its socket)."""
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for entry in entries:
        socket = os.path.join(path, entry)
        try:
            mode = os.lstat(socket).st_mode
        except OSError:
            continue
        if not stat.S_ISSOCK(mode):
            continue
        # Only the socket matters to `-O exit`: no config read (-F /dev/null), the host a dummy.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["ssh", "-F", "/dev/null", "-S", socket, "-O", "exit", "nixherd-guardian"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
