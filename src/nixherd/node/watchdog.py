"""The deployer's side of the activation watchdog: its argv, and start, follow, confirm, abort.

Each call runs one mode of `resources/watchdog.sh` on the node (see its header) and reads the
answer through `protocol`; what to do with a status is `activation`'s business. Following goes
on through dropped connections: the watchdog carries on alone, and `wait` picks up the log at
the offset the last stream reached.
"""

from __future__ import annotations

import getpass
import math
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources

from nixherd.errors import CommandError, NixherdError
from nixherd.events import EventSink, LogLine
from nixherd.node.checks import CheckResult
from nixherd.node.goal import Goal
from nixherd.node.probe import BOOTMARK_SH
from nixherd.node.protocol import (
    ACTIVATION_ID,
    LOCKED_EXIT,
    MARKER,
    PROGRESS,
    UNSAFE_EXIT,
    BootMark,
    Lock,
    Marker,
    ProtocolError,
    Status,
    is_marker,
    parse_marker,
    parse_progress,
)
from nixherd.run.process import Result
from nixherd.run.ssh import Connection

STATE_DIR = "/run/nixherd"
PROFILE = "/nix/var/nix/profiles/system"

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
STORE_PATH = re.compile(r"^/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$")
# Seconds between reconnection attempts when the node does not answer.
_RETRY = 1.0
# Bound on one `wait` call on the target, so a forgotten waiter always ends by itself.
_WAIT_SLICE = 120
_SSH_FAILED = 255  # ssh's exit status when ssh itself failed (connect, key exchange, auth)


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
    f"printf '\\n{MARKER}{Status.MISSING} offset=none boot=%s\\n' \"$boot\"\n"
)


def watchdog_argv(activation_id: str, mode: str, *args: str) -> list[str]:
    """The remote argv of a later step of an activation (wait, confirm, abort)."""
    if not ACTIVATION_ID.match(activation_id):
        raise NixherdError(f"not an activation id: {activation_id!r}")
    return ["sh", "-c", _LATER, "nixherd", activation_id, mode, *args]


@dataclass
class Follower:
    """What we have seen of one activation on the target."""

    conn: Connection
    activation_id: str
    emit: EventSink
    # How far into the activation's log we are; None: its log is not followed at all.
    offset: int | None = 0
    log: list[str] = field(default_factory=list)
    # The last status read from the node (None: never reached it).
    last: Marker | None = None
    # The boot the activation runs in (from `start`, else the first status): a status from
    # another boot means the node rebooted, and that ends following at once.
    boot: BootMark | None = None
    # Evidence on new logins while confirming: why one failed (ssh's words), and how many
    # seconds of the window were left when the confirmation that got an answer was sent.
    login_failure: str | None = None
    confirm_sent: float | None = None
    # Called once the watchdog runs on the node (from here on, an abort reaches it).
    on_launch: Callable[[], None] | None = None

    def line(self, text: str) -> None:
        self.log.append(text)
        self.emit(LogLine(self.conn.target.node, text))

    def stream(self, markers: list[str]) -> Callable[[str], None]:
        """The on_line of a following call (`start` or `wait`): status lines go to `markers`
        (parsed once the call is over: see `ended`), progress offsets move `offset`, and the
        rest is the log."""

        def on_line(text: str) -> None:
            if is_marker(text):
                markers.append(text)
            elif text.startswith(PROGRESS):
                progress = parse_progress(text)
                if progress is not None and self.offset is not None:
                    self.offset = progress
            elif text:
                self.line(text)

        return on_line

    @staticmethod
    def ended(markers: Sequence[str], result: Result | None) -> Marker | None:
        """The status a call ended on: its last status line. A malformed one from a call that
        was cut off (the line may be torn) counts as none; from a call that ran to its end, it
        is a ProtocolError."""
        if not markers:
            return None
        try:
            return parse_marker(markers[-1])
        except ProtocolError:
            if result is not None and result.returncode == 0:
                raise
            return None

    def reached(self, marker: Marker, *, until_settled: bool = False) -> Marker | None:
        """Record the status a following call ended on; that status if following is over
        (settled, which includes missing and rebooted, or waiting unless `until_settled`),
        else None."""
        if self.offset is not None and marker.offset is not None:
            self.offset = marker.offset
        if marker.boot and self.boot is None:
            self.boot = marker.boot
        elif marker.boot and marker.boot != self.boot:
            marker = replace(marker, status=Status.REBOOTED, reason="")
        self.last = marker
        if marker.status.settled:
            return marker
        return marker if marker.status is Status.WAITING and not until_settled else None

    def status_of(self, result: Result) -> Marker | None:
        """The status in the last marker of a one-shot call's output (confirm, abort), with
        the same reboot rule as following; None when it has none."""
        output = result.stdout
        marker = self.ended([line for line in output.splitlines() if is_marker(line)], result)
        if marker is None:
            return None
        self.reached(marker, until_settled=True)
        return self.last

    def wait(self, deadline: float, *, until_settled: bool = False) -> Marker | None:
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
            marker = self.ended(markers, result)
            if result is None or marker is None:
                # ssh failed (dropped, refused, timed out): the watchdog carries on; retry.
                time.sleep(_RETRY)
                continue
            status = self.reached(marker, until_settled=until_settled)
            if status is not None:
                return status


def start(
    follow: Follower,
    toplevel: str,
    options: ActivationOptions,
    confirm_window: float,
) -> tuple[str | None, Marker | None]:
    """Start the activation; the previous system, and the status if `start` streamed to one.

    `start` goes on following the activation like `wait` does, which saves a round trip per
    node; when its stream ends without a status (the connection dropped), `wait` takes over.
    """
    node, conn = options.node, follow.conn
    argv = start_argv(
        follow.activation_id,
        toplevel,
        options,
        confirm_seconds=confirm_window,
        by=deployer_identity(),
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
                if follow.on_launch is not None:
                    follow.on_launch()
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
    holder = next((lock for lock in map(Lock.from_refusal, head) if lock), None)
    if result is not None and result.returncode == LOCKED_EXIT and holder:
        raise LockHeldError(
            node,
            f"another deploy holds the lock since {holder.since} "
            f"(pid {holder.pid}, by {holder.by})",
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
    marker = follow.ended(markers, result)
    return previous, follow.reached(marker) if marker else None


def confirm(follow: Follower, deadline: float, emit: EventSink) -> Marker | None:
    """Confirm over a fresh connection, retrying until `deadline`; the settled status or None."""
    conn, activation_id = follow.conn, follow.activation_id
    node = conn.target.node
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        window = deadline - time.monotonic()
        left = max(1.0, window)
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
        except CommandError as exc:
            result = None
            if exc.returncode is None:  # our timeout: the login never answered
                follow.login_failure = "a new ssh login did not answer in time"
        marker = follow.ended(markers, result)
        if result is not None:
            if marker is not None:
                follow.reached(marker, until_settled=True)
                follow.confirm_sent = window
                return follow.last
            tail = (result.stdout + result.stderr).strip().splitlines()
            why = tail[-1] if tail else f"exit {result.returncode}"
            if result.returncode == _SSH_FAILED:
                follow.login_failure = why
            if tries == 1:
                emit(LogLine(node, f"confirmation over a new connection failed: {why}"))
        time.sleep(_RETRY)
    return None


def abort(follow: Follower, reason: str, *, seconds: int = 60) -> Marker | None:
    """Tell the watchdog to roll back (a check failed, or a second Ctrl-C: a switch still
    running is stopped first); the status it answers with within `seconds`, if any."""
    try:
        result = follow.conn.run(
            watchdog_argv(follow.activation_id, "abort", str(seconds)),
            elevate=True,
            input=reason + "\n",
            check=False,
            timeout=seconds + 30,
            what="abort",
        )
    except CommandError:
        return None
    return follow.status_of(result)


def await_settled(
    conn: Connection, activation_id: str, *, deadline: float, emit: EventSink
) -> Marker | None:
    """Wait until another run's activation on the node settles (confirmed, rolled back, ...),
    without its log; its final status (missing or rebooted too), or None if not by `deadline`."""
    follow = Follower(conn, activation_id, emit, offset=None)
    return follow.wait(deadline, until_settled=True)
