"""Activating a system on one node: lock, profile, detached switch, health checks, magic rollback.

The work on the target is done by a small POSIX sh watchdog (`nixherd/resources/watchdog.sh`), sent
on stdin with each activation: nothing is installed on the target. Per activation:

1. `start` (over the node's ControlMaster) takes the node's lock (`/run/nixherd/lock`; a second
   deploy fails at once, naming the holder), records the running system and profile generation,
   and launches the watchdog detached (`systemd-run` where systemd runs, else `setsid`), so that an
   ssh drop or a network restart cannot kill a half-done switch.
2. The watchdog runs `switch-to-configuration` and records the result; `start` itself goes on
   streaming its log and status (one round trip per node), and if that stream is cut, nixherd
   follows again with `wait` over the ControlMaster. Nothing on the target polls: every step
   blocks on a child or on a FIFO (see the script's header).
3. With magic rollback (switch and test, on by default), a switch is only tried out first
   (`switch-to-configuration test`: the system profile and the boot loader's default stay on the
   previous generation) and the watchdog waits for a confirmation. nixherd runs the health
   checks and confirms over a NEW ssh connection, which proves that a fresh login still works;
   only then does the watchdog set the profile and run `switch-to-configuration boot`, so an
   unconfirmed system never survives a reboot as the one that boots. No confirmation in time,
   a failed activation, or a failed check (nixherd sends an abort) -> the watchdog re-activates
   the previous system on its own. Without rollback, and for `boot`, the profile is set first,
   as NixOS does.

Every status the watchdog reports carries the node's boot identity (boot id and pid 1's start
time): a status from another boot, or an activation whose state is gone, ends the wait at once,
and the error says what the node runs now. A run that finds an unconfirmed activation of the
same system in flight (another run's, or one whose deployer died) never calls the node up to
date: it waits for that activation to settle, then looks again.

Ctrl-C: the keyboard never reaches the target's processes. If nixherd is interrupted while it
waits on an activation in its main thread, it finishes that node first (checks, confirmation:
a node that activated and passed its checks is confirmed, so it is not rolled back for nothing)
and then re-raises; a second Ctrl-C stops waiting, and the target, unconfirmed, rolls itself back
after the confirm timeout. Either way the lock is released by the watchdog when it is done.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

from nixherd.errors import CommandError, NixherdError
from nixherd.events import (
    EventSink,
    LogLine,
    Stage,
    StageFinished,
    StageStarted,
)
from nixherd.node.checks import CheckResult, HealthCheck, run_checks, summary
from nixherd.node.goal import Goal
from nixherd.node.probe import BOOTMARK_SH, probe
from nixherd.run.process import Result
from nixherd.run.ssh import Connection

STATE_DIR = "/run/nixherd"
PROFILE = "/nix/var/nix/profiles/system"
LOCKED_EXIT = 75
# The status the deployer gives an activation whose node answered from another boot.
REBOOTED = "rebooted"

# Exit code of `start` when /run/nixherd is not root's alone (nothing was written there).
UNSAFE_EXIT = 77

# Writes the script (stdin) into the activation's private state dir and runs it from there, so
# that the detached watchdog can be started from the same file. Before anything is written as
# root, /run and /run/nixherd must be real directories (no symlink) owned by root that no group
# or other user may write to: otherwise another user could redirect or swap what root writes.
# `mkdir` without -p never follows a symlink planted in its place; the check decides either way.
_BOOT = f"""umask 077
b=/run/nixherd
unsafe() {{
    [ -d "$1" ] && [ ! -L "$1" ] || return 0
    set -- $(ls -ldn "$1")
    [ "$3" = 0 ] || return 0
    case $1 in d????-??-*) return 1 ;; esac
    return 0
}}
[ -e "$b" ] || [ -L "$b" ] || mkdir "$b" 2>/dev/null
for p in /run "$b"; do
    if unsafe "$p"; then
        echo "refusing: $p is not a directory that only root can write ($(ls -ldn "$p" 2>&1))"
        exit {UNSAFE_EXIT}
    fi
done
d=$b/act-$1 && mkdir "$d" && cat >"$d/watchdog.sh" && exec sh "$d/watchdog.sh" "$@"
"""
_STORE_PATH = re.compile(r"^/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$")
_MARKER = "@nixherd status="
_ACTIVATION_ID = re.compile(r"^[0-9a-f]{16}$")
# How far into the log the lines streamed so far reach (where a cut-off follower resumes).
_PROGRESS = "@nixherd offset="
# Seconds between reconnection attempts when the node does not answer.
_RETRY = 1.0
# Bound on one `wait` call on the target, so a forgotten waiter always ends by itself.
_WAIT_SLICE = 120

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ActivationOptions:
    """How to activate: the goal, and the safety net around it."""

    goal: Goal
    node: str
    rollback: bool = True
    confirm_timeout: float = 30.0
    timeout: float = 600.0
    # Instead of setting the profile to the new system, move it to this existing generation
    # (`nixherd rollback`); only with Goal.SWITCH or Goal.BOOT.
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """A settled, successful activation."""

    previous: str | None
    rolled_back: bool = False
    reason: str | None = None
    status: str = "done"
    checks: tuple[CheckResult, ...] = ()
    log: tuple[str, ...] = field(default=(), repr=False)


class ActivationError(NixherdError):
    """Activation failed on a node; says whether the node is back on its previous system."""

    def __init__(
        self,
        node: str,
        message: str,
        *,
        rolled_back: bool = False,
        previous: str | None = None,
        reason: str | None = None,
        log: Sequence[str] = (),
        checks: Sequence[CheckResult] = (),
    ) -> None:
        self.node = node
        self.message = message
        self.rolled_back = rolled_back
        self.previous = previous
        self.reason = reason
        self.log = tuple(log)
        self.checks = tuple(checks)
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.node}: {self.message}"
        tail = "\n".join(self.log[-20:])
        return f"{head}\n{tail}" if tail else head


class LockHeldError(ActivationError):
    """Another deploy holds the node's lock."""


def watchdog_script() -> str:
    """The text of the watchdog sent to the target."""
    return resources.files("nixherd").joinpath("resources/watchdog.sh").read_text(encoding="utf-8")


def deployer_identity() -> str:
    """Who holds a lock, as shown to a second deployer: user@host, reduced to safe characters."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    raw = f"{user}@{socket.gethostname()}"
    return re.sub(r"[^A-Za-z0-9@._-]", "_", raw)[:64] or "unknown"


def new_activation_id() -> str:
    return secrets.token_hex(8)


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value)))


def _profile_mode(options: ActivationOptions) -> str:
    if options.generation is not None:
        if not options.goal.sets_profile:
            raise NixherdError(f"{options.node}: a generation can only be set by switch or boot")
        return f"gen:{int(options.generation)}"
    return "set" if options.goal.sets_profile else "none"


def _uses_rollback(options: ActivationOptions) -> bool:
    return options.rollback and options.goal.changes_running_system


def start_argv(
    activation_id: str,
    toplevel: str,
    options: ActivationOptions,
    *,
    confirm_seconds: float,
    by: str,
) -> list[str]:
    """The remote argv of the `start` step (the script itself goes on stdin)."""
    return [
        "sh",
        "-c",
        _BOOT,
        "nixherd",
        activation_id,
        "start",
        options.goal.value,
        toplevel,
        _profile_mode(options),
        "1" if _uses_rollback(options) else "0",
        _seconds(confirm_seconds),
        _seconds(options.timeout),
        by,
        str(_WAIT_SLICE),
    ]


# A later step runs the activation's own copy of the watchdog. When that is gone (a reboot
# emptied /run), it says so at once, with the boot identity, instead of failing to open it.
_LATER = (
    "f=/run/nixherd/act-$1/watchdog.sh\n"
    'if [ -f "$f" ] && [ -O "$f" ]; then exec sh "$f" "$@"; fi\n'
    f"{BOOTMARK_SH}\n"
    "bootmark\n"
    "printf '\\n@nixherd status=missing offset=none boot=%s\\n' \"$boot\"\n"
)


def watchdog_argv(activation_id: str, mode: str, *args: str) -> list[str]:
    """The remote argv of a later step of an activation (wait, confirm, abort)."""
    if not _ACTIVATION_ID.match(activation_id):
        raise NixherdError(f"not an activation id: {activation_id!r}")
    return ["sh", "-c", _LATER, "nixherd", activation_id, mode, *args]


@dataclass
class _Follow:
    """What we have seen of one activation on the target."""

    conn: Connection
    activation_id: str
    emit: EventSink
    # How far into the activation's log we are; None: its log is not followed at all.
    offset: int | None = 0
    log: list[str] = field(default_factory=list)
    # The last status read from the node (None: never reached it).
    last: str | None = None
    # The boot the activation runs in (from `start`, else the first status): a status from
    # another boot means the node rebooted, and that ends following at once.
    boot: str | None = None

    def line(self, text: str) -> None:
        self.log.append(text)
        self.emit(LogLine(self.conn.target.node, text))

    def stream(self, markers: list[str]) -> Callable[[str], None]:
        """The on_line of a following call (`start` or `wait`): status markers go to `markers`,
        progress offsets move `offset`, and the rest is the log."""

        def on_line(text: str) -> None:
            if text.startswith(_MARKER):
                markers.append(text)
            elif text.startswith(_PROGRESS):
                value = text[len(_PROGRESS) :].strip()
                if value.isdigit() and self.offset is not None:
                    self.offset = int(value)
            elif text:
                self.line(text)

        return on_line

    def reached(self, marker: str, *, until_settled: bool = False) -> str | None:
        """Record the status a following call ended on; that status if following is over
        (settled, missing, rebooted, or waiting unless `until_settled`), else None."""
        status, offset, boot = _parse_marker(marker)
        if self.offset is not None and offset is not None:
            self.offset = offset
        if boot and self.boot is None:
            self.boot = boot
        elif boot and boot != self.boot:
            status = REBOOTED
        self.last = status
        if status == "missing" or _settled(status):
            return status
        return status if status == "waiting" and not until_settled else None

    def status_of(self, output: str) -> str | None:
        """The status in the last marker of a one-shot call's output (confirm, abort), with
        the same reboot rule as following; None when it has none."""
        for line in reversed(output.splitlines()):
            if line.startswith(_MARKER):
                self.reached(line, until_settled=True)
                return self.last
        return None

    def wait(self, deadline: float, *, until_settled: bool = False) -> str | None:
        """Follow the log until the status settles (or reaches `waiting`); None if unreachable."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            slice_ = min(_WAIT_SLICE, max(1, math.ceil(left)))
            markers: list[str] = []
            offset = "none" if self.offset is None else str(self.offset)
            until = "1" if until_settled else "0"
            try:
                result = self.conn.run(
                    watchdog_argv(self.activation_id, "wait", offset, str(slice_), until),
                    elevate=True,
                    check=False,
                    timeout=slice_ + 30,
                    on_line=self.stream(markers),
                    what="activation status",
                )
            except CommandError:
                result = None
            if result is None or not markers:
                # ssh failed (dropped, refused, timed out): the watchdog carries on; retry.
                time.sleep(_RETRY)
                continue
            status = self.reached(markers[-1], until_settled=until_settled)
            if status is not None:
                return status


def _parse_marker(line: str) -> tuple[str, int | None, str]:
    """(status, offset, boot) of "@nixherd status=rolled-back timeout offset=123 boot=B"
    (offset=none: the log was not read; None then, as when there is no offset)."""
    body = line[len(_MARKER) :].strip()
    head, sep, boot = body.rpartition(" boot=")
    if not sep:
        head, boot = body, ""
    status, sep, rest = head.rpartition(" offset=")
    if not sep:
        return head, None, boot
    return status, int(rest) if rest.isdigit() else None, boot


def _settled(status: str) -> bool:
    word = status.split(" ", 1)[0]
    return word not in ("starting", "activating", "waiting", "confirming", "rolling-back")


def _reason(status: str) -> str:
    return status.split(" ", 1)[1] if " " in status else ""


@contextlib.contextmanager
def _stage(emit: EventSink, node: str, stage: Stage) -> Iterator[None]:
    emit(StageStarted(node, stage))
    started = time.monotonic()
    try:
        yield
    finally:
        emit(StageFinished(node, stage, time.monotonic() - started))


def activate(
    conn: Connection,
    toplevel: str,
    options: ActivationOptions,
    *,
    checks: Sequence[HealthCheck] = (),
    emit: EventSink,
) -> ActivationResult:
    """Activate `toplevel` on the node behind `conn` per `options`; raise ActivationError if not."""
    interrupted: list[KeyboardInterrupt] = []
    try:
        return _activate(conn, toplevel, options, checks, emit, interrupted)
    finally:
        if interrupted:
            raise interrupted[0]


def _activate(
    conn: Connection,
    toplevel: str,
    options: ActivationOptions,
    checks: Sequence[HealthCheck],
    emit: EventSink,
    interrupted: list[KeyboardInterrupt],
) -> ActivationResult:
    node = options.node
    if not options.goal.activates:
        raise NixherdError(f"{node}: goal {options.goal.value} does not activate")
    if not _STORE_PATH.match(toplevel):
        raise NixherdError(f"{node}: not a store path: {toplevel!r}")
    # Checks run while the watchdog waits: its window covers them on top of the confirm timeout.
    run_health = options.goal.changes_running_system
    budget = sum(c.budget for c in checks) if run_health else 0.0
    confirm_window = options.confirm_timeout + budget
    activation_id = new_activation_id()
    follow = _Follow(conn, activation_id, emit)

    with _stage(emit, node, Stage.ACTIVATE):
        previous, status = _start(conn, toplevel, options, activation_id, confirm_window, follow)
        if status is None:
            status = _guard(
                interrupted,
                lambda: follow.wait(time.monotonic() + options.timeout + 30),
            )
    if status is None:
        if follow.last is None:
            message = (
                "lost contact during activation; the node finishes (and, unconfirmed, rolls "
                "back) on its own"
            )
        else:
            message = f"activation did not settle in time (last status: {follow.last})"
        raise ActivationError(node, message, previous=previous, log=follow.log)
    _check_vanished(follow, status, previous, ())
    waiting_since = time.monotonic()
    if status != "waiting":
        return _settle(node, status, previous, follow.log, ())

    results: tuple[CheckResult, ...] = ()
    if run_health and checks:
        results = _guard(interrupted, lambda: run_checks(conn, checks, emit=emit))
        bad = summary(results)
        if bad:
            emit(LogLine(node, f"health checks failed: {bad}; rolling back"))
            _abort(follow, f"health check failed: {bad}")
            # Also brings the rollback's log along.
            final = _guard(
                interrupted,
                lambda: follow.wait(
                    waiting_since + confirm_window + options.timeout + 30,
                    until_settled=True,
                ),
            )
            _check_vanished(follow, final, previous, results)
            raise _failure(
                node,
                final,
                previous,
                follow.log,
                results,
                why=f"health check failed ({bad})",
            )

    with _stage(emit, node, Stage.CONFIRM):
        final = _guard(
            interrupted,
            lambda: _confirm(follow, waiting_since + confirm_window, emit),
        )
        if final not in ("confirmed", REBOOTED, "missing"):
            # No confirmation got through: the node rolls back on its own; find out how it ended.
            final = _guard(
                interrupted,
                lambda: follow.wait(
                    waiting_since + confirm_window + options.timeout + 30, until_settled=True
                ),
            )
    if final == "confirmed":
        return ActivationResult(previous, False, None, final, results, tuple(follow.log))
    _check_vanished(follow, final, previous, results)
    raise _failure(node, final, previous, follow.log, results, why=None)


def _check_vanished(
    follow: _Follow, status: str | None, previous: str | None, results: Sequence[CheckResult]
) -> None:
    """Raise if the node rebooted (or lost the activation's state) before it settled: the
    activation is over then, and what the node runs now is the news."""
    if status not in (REBOOTED, "missing"):
        return
    node = follow.conn.target.node
    try:
        now = probe(follow.conn, timeout=30).current
    except NixherdError:
        now = None
    runs = now or "no system"
    if status == REBOOTED:
        what = "the node rebooted before the activation was settled"
    else:
        what = "the activation's state vanished on the node"
    if previous is not None and now == previous:
        raise ActivationError(
            node,
            f"{what}; it runs {runs}, its previous system",
            rolled_back=True,
            previous=previous,
            reason=f"{what} (it booted its previous system)" if status == REBOOTED else what,
            log=follow.log,
            checks=results,
        )
    raise ActivationError(
        node,
        f"{what}; it runs {runs}",
        previous=previous,
        reason=what,
        log=follow.log,
        checks=results,
    )


def await_settled(
    conn: Connection, activation_id: str, *, deadline: float, emit: EventSink
) -> str | None:
    """Wait until another run's activation on the node settles (confirmed, rolled back, ...),
    without its log; its final status, "missing" or "rebooted", or None if not by `deadline`."""
    follow = _Follow(conn, activation_id, emit, offset=None)
    return follow.wait(deadline, until_settled=True)


def _guard(interrupted: list[KeyboardInterrupt], step: Callable[[], T]) -> T:
    """Run `step`; on a first Ctrl-C, remember it and run the step again to finish the node."""
    while True:
        try:
            return step()
        except KeyboardInterrupt as exc:
            if interrupted:
                raise
            interrupted.append(exc)


def _start(
    conn: Connection,
    toplevel: str,
    options: ActivationOptions,
    activation_id: str,
    confirm_window: float,
    follow: _Follow,
) -> tuple[str | None, str | None]:
    """Start the activation; the previous system, and the status if `start` streamed to one.

    `start` goes on following the activation like `wait` does, which saves a round trip per
    node; when its stream ends without a status (the connection dropped), `wait` takes over.
    """
    node = options.node
    argv = start_argv(
        activation_id, toplevel, options, confirm_seconds=confirm_window, by=deployer_identity()
    )
    values: dict[str, str] = {}
    head: list[str] = []
    markers: list[str] = []
    following = follow.stream(markers)

    def on_line(text: str) -> None:
        if "prevgen" in values:
            following(text)
            return
        key, sep, value = text.partition("=")
        if sep and key in ("boot", "previous", "prevgen"):
            values[key] = value
            if key == "prevgen":
                shown = values.get("previous") or "none"
                follow.emit(LogLine(node, f"previous system: {shown}"))
        else:
            head.append(text)

    try:
        result: Result | None = conn.run(
            argv,
            elevate=True,
            input=watchdog_script(),
            check=False,
            timeout=_WAIT_SLICE + 120,
            on_line=on_line,
            what="activation start",
        )
    except CommandError:
        # Started, then cut off while following: `wait` takes over. Not started: an error.
        if "prevgen" not in values:
            raise
        result = None
    locked = next((line for line in head if line.startswith("locked ")), None)
    if result is not None and result.returncode == LOCKED_EXIT and locked:
        fields = dict(w.split("=", 1) for w in locked.split()[1:] if "=" in w)
        raise LockHeldError(
            node,
            f"another deploy holds the lock since {fields.get('since', '?')} "
            f"(pid {fields.get('pid', '?')}, by {fields.get('by', '?')})",
        )
    refusal = next((line for line in head if line.startswith("refusing: ")), None)
    if result is not None and result.returncode == UNSAFE_EXIT and refusal:
        raise ActivationError(node, f"the watchdog {refusal}")
    if result is not None and "prevgen" not in values:
        raise ActivationError(
            node,
            f"could not start the activation (exit {result.returncode})",
            log=(result.stdout + result.stderr).strip().splitlines(),
        )
    previous = values.get("previous") or None
    follow.boot = values.get("boot") or None
    return previous, follow.reached(markers[-1]) if markers else None


def _confirm(follow: _Follow, deadline: float, emit: EventSink) -> str | None:
    """Confirm over a fresh connection, retrying until `deadline`; the settled status or None."""
    conn, activation_id = follow.conn, follow.activation_id
    node = conn.target.node
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        left = max(1.0, deadline - time.monotonic())
        markers: list[str] = []
        # The log goes on from where following stopped: the confirmation's own steps (the
        # profile, the boot entry) reach the deployer's log too.
        offset = "none" if follow.offset is None else str(follow.offset)
        try:
            result = conn.run(
                watchdog_argv(activation_id, "confirm", "30", offset),
                elevate=True,
                multiplex=False,
                check=False,
                timeout=min(left, 30.0) + 30,
                on_line=follow.stream(markers),
                what="confirm",
            )
        except CommandError:
            result = None
        if result is not None:
            if markers:
                follow.reached(markers[-1], until_settled=True)
                return follow.last
            if tries == 1:
                tail = (result.stdout + result.stderr).strip().splitlines()
                why = tail[-1] if tail else f"exit {result.returncode}"
                emit(LogLine(node, f"confirmation over a new connection failed: {why}"))
        time.sleep(_RETRY)
    return None


def _abort(follow: _Follow, reason: str) -> str | None:
    try:
        result = follow.conn.run(
            watchdog_argv(follow.activation_id, "abort", "60"),
            elevate=True,
            input=reason + "\n",
            check=False,
            timeout=90,
            what="abort",
        )
    except CommandError:
        return None
    return follow.status_of(result.stdout)


def _settle(
    node: str,
    status: str,
    previous: str | None,
    log: Sequence[str],
    results: tuple[CheckResult, ...],
) -> ActivationResult:
    if status in ("done", "confirmed"):
        return ActivationResult(previous, False, None, status, results, tuple(log))
    raise _failure(node, status, previous, log, results, why=None)


def _failure(
    node: str,
    status: str | None,
    previous: str | None,
    log: Sequence[str],
    results: Sequence[CheckResult],
    *,
    why: str | None,
) -> ActivationError:
    status = status or "unknown"
    word, reason = status.split(" ", 1)[0], _reason(status)
    cause = why or _describe(reason)
    if word == "rolled-back":
        return ActivationError(
            node,
            f"{cause}; rolled back to {previous}",
            rolled_back=True,
            previous=previous,
            reason=cause,
            log=log,
            checks=results,
        )
    if word == "rollback-failed":
        return ActivationError(
            node,
            f"{cause}; ROLLBACK FAILED, the node may be on neither system",
            previous=previous,
            reason=cause,
            log=log,
            checks=results,
        )
    if word == "failed":
        return ActivationError(
            node, cause, previous=previous, reason=cause, log=log, checks=results
        )
    if word == "missing":
        return ActivationError(
            node,
            "the activation's state vanished on the node (rebooted?)",
            previous=previous,
            log=log,
            checks=results,
        )
    return ActivationError(
        node,
        f"{cause or 'activation'}: the outcome is unknown (last status: {status}); "
        "an unconfirmed node rolls back on its own",
        previous=previous,
        reason=cause,
        log=log,
        checks=results,
    )


def _describe(reason: str) -> str:
    if reason == "timeout":
        return "no confirmation within the timeout (was the deployer cut off?)"
    if reason.startswith("activation-exit-124"):
        return "activation timed out"
    if reason.startswith("activation-exit-"):
        return f"activation failed (exit {reason.removeprefix('activation-exit-')})"
    if reason == "profile":
        return "setting the system profile failed"
    if reason.startswith("boot-exit-"):
        return (
            "making the confirmed system the boot default failed "
            f"(exit {reason.removeprefix('boot-exit-')})"
        )
    if reason == "aborted":
        return "aborted by the deployer"
    return reason


# --- rollback: back to the generation before the current one ---


@dataclass(frozen=True, slots=True)
class Generations:
    """What a node runs and the system profile's generations (number -> system)."""

    current: str | None
    profile: int | None  # the generation the profile points at
    systems: Mapping[int, str]

    def previous(self) -> int | None:
        """The newest generation older than the profile's current one."""
        if self.profile is None:
            return None
        older = [n for n in self.systems if n < self.profile]
        return max(older) if older else None


def parse_generations(output: str) -> Generations:
    current: str | None = None
    profile: int | None = None
    systems: dict[int, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key == "current":
            current = value.strip() or None
        elif key == "profile" and value.strip().isdigit():
            profile = int(value)
        elif key == "generation":
            number, _, path = value.partition(" ")
            if number.isdigit() and _STORE_PATH.match(path.strip()):
                systems[int(number)] = path.strip()
    return Generations(current, profile, systems)


def generations(conn: Connection) -> Generations:
    """Read the node's running system and its system profile's generations."""
    result = conn.run(
        ["sh", "-s", "--", "-", "info"],
        input=watchdog_script(),
        timeout=60,
        what="read generations",
    )
    return parse_generations(result.stdout)


def rollback(
    conn: Connection,
    *,
    node: str,
    checks: Sequence[HealthCheck] = (),
    confirm_timeout: float = 30.0,
    timeout: float = 600.0,
    emit: EventSink,
) -> tuple[Generations, ActivationResult]:
    """Move the node's profile to the previous generation and switch to it, with magic rollback.

    If the older system fails its checks or cuts the deployer off, the watchdog returns the
    node to the generation it ran before (the rollback is itself rolled back).
    """
    gens = generations(conn)
    number = gens.previous()
    if number is None:
        raise ActivationError(node, "no previous generation to roll back to")
    emit(LogLine(node, f"rolling back to generation {number} ({gens.systems[number]})"))
    options = ActivationOptions(
        Goal.SWITCH,
        node,
        rollback=True,
        confirm_timeout=confirm_timeout,
        timeout=timeout,
        generation=number,
    )
    return gens, activate(conn, gens.systems[number], options, checks=checks, emit=emit)
