"""The watchdog protocol: the words `resources/watchdog.sh` says to the deployer, typed once.

The watchdog reports an activation's status in one line that ends every `start`, `wait`,
`confirm` and `abort`:

    @nixherd status=WORD[ REASON] offset=N|none boot=BOOTMARK

and between log lines, how far into the log the stream has reached (`@nixherd offset=N`). The
words, their meaning and whether they are settled (final: the watchdog has let the lock go) are
the table in `Status`; the script's header holds the same table, and a unit test holds the two
together word for word. Everything else in nixherd matches on `Status`, never on the text.

The node's lock (the symlink /run/nixherd/lock) reads "ID PID SINCE BY"; a second deploy that
finds it held is told `locked since=SINCE pid=PID by=BY`. `Lock` reads both.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from nixherd.errors import NixherdError

MARKER = "@nixherd status="
PROGRESS = "@nixherd offset="
# Exit code of `start` when another activation holds the node's lock.
LOCKED_EXIT = 75
# Exit code of `start` when /run/nixherd is not root's alone (nothing was written there).
UNSAFE_EXIT = 77

ACTIVATION_ID = re.compile(r"^[0-9a-f]{16}$")

# A node's boot identity: "KERNEL-BOOT-ID/PID1-START-TIME" (probe.boot_marker, the script's
# `bootmark`). Only compared for equality: a different one means the node rebooted. An alias,
# not a NewType: it is the probe's plain text, which tests and reports compare as such.
BootMark: TypeAlias = str


class ProtocolError(NixherdError):
    """A line from the watchdog that does not say what the protocol says it does."""


class Status(enum.StrEnum):
    """An activation's status. One row each: word, settled, what follows the word, meaning.

    The same rows, in the same order and words, are the status table in the script's header.
    """

    settled: bool
    argument: str
    meaning: str

    STARTING = "starting", False, "", "the lock is taken; the detached watchdog is launched"
    ACTIVATING = "activating", False, "", "switch-to-configuration runs"
    WAITING = "waiting", False, "", "the new system runs; the deployer's confirmation is awaited"
    CONFIRMING = "confirming", False, "", "confirmed; the profile and the boot entry are set"
    ROLLING_BACK = "rolling-back", False, "REASON", "the previous system is being restored"
    DONE = "done", True, "", "activated; no confirmation was asked for"
    CONFIRMED = "confirmed", True, "", "confirmed; the new system runs and is the one that boots"
    FAILED = "failed", True, "REASON", "failed where there was nothing to roll back"
    ROLLED_BACK = "rolled-back", True, "REASON", "the previous system runs again"
    ROLLBACK_FAILED = "rollback-failed", True, "REASON", "the node may run neither system"
    LOST = "lost", True, "STATUS", "the watchdog died at STATUS (said to followers only)"
    MISSING = "missing", True, "", "no state for this activation (said to followers only)"
    REBOOTED = "rebooted", True, "", "a status from another boot (the deployer's word only)"

    def __new__(cls, word: str, settled: bool, argument: str, meaning: str) -> Status:
        member = str.__new__(cls, word)
        member._value_ = word
        member.settled = settled
        member.argument = argument
        member.meaning = meaning
        return member


@dataclass(frozen=True, slots=True)
class Marker:
    """One status line: the status, its reason, how far the log was streamed, and the boot."""

    status: Status
    reason: str = ""
    # None: the log was not streamed (offset=none), or the line gave no offset.
    offset: int | None = None
    boot: BootMark | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.reason}" if self.reason else str(self.status)


_BY_WORD = {status.value: status for status in Status}
_MARKER_LINE = re.compile(
    r"(?P<word>[a-z-]+)(?: (?!offset=|boot=)(?P<reason>[^ ].*?))?"
    r"(?: offset=(?P<offset>[0-9]+|none))?(?: boot=(?P<boot>\S*))?"
)


def is_marker(line: str) -> bool:
    return line.startswith(MARKER)


def parse_marker(line: str) -> Marker:
    """The Marker of "@nixherd status=rolled-back timeout offset=123 boot=B".

    `offset` and `boot` may be missing (None then); an unknown word, a reason where the word
    takes none, or none where it takes one is a ProtocolError.
    """
    if not is_marker(line):
        raise ProtocolError(f"not a watchdog status line: {line!r}")
    found = _MARKER_LINE.fullmatch(line[len(MARKER) :].strip())
    if found is None:
        raise ProtocolError(f"malformed watchdog status line: {line!r}")
    word, reason = found["word"], found["reason"] or ""
    status = _BY_WORD.get(word)
    if status is None:
        raise ProtocolError(f"unknown watchdog status {word!r} in {line!r}")
    if bool(reason) != bool(status.argument):
        wants = f"a {status.argument}" if status.argument else "nothing"
        raise ProtocolError(f"watchdog status {word!r} takes {wants}: {line!r}")
    offset = found["offset"]
    boot = found["boot"]
    return Marker(
        status,
        reason,
        int(offset) if offset is not None and offset.isdigit() else None,
        boot or None,
    )


def parse_progress(line: str) -> int | None:
    """The offset of "@nixherd offset=N"; None for any other line."""
    if not line.startswith(PROGRESS):
        return None
    value = line[len(PROGRESS) :].strip()
    return int(value) if value.isdigit() else None


# switch-to-configuration's exit code when the switch happened but a unit failed to reload,
# restart or start, or is failed afterwards (docs/lab.md, "Exit codes", from nixpkgs'
# switch-to-configuration). A deploy treats it as a failed activation: rolled back under magic
# rollback, kept and reported failed without (README, "How a deploy runs").
UNIT_FAILED_EXIT = 4
# The line it prints before that exit, naming the units (nixpkgs nixos/tests/switch-test.nix
# asserts it: "warning: the following units failed: test.service").
_UNITS_FAILED = "warning: the following units failed: "
_UNIT_WORD = re.compile(r"[A-Za-z0-9:_.\\@-]+\.[a-z]+").fullmatch


def failed_units(log: Sequence[str]) -> tuple[str, ...]:
    """The units the switch's last "the following units failed" line names (only words shaped
    like unit names: the rest of the node's output is not repeated)."""
    for line in reversed(log):
        if line.startswith(_UNITS_FAILED):
            words = (w.strip() for w in line[len(_UNITS_FAILED) :].split(","))
            return tuple(w for w in words if _UNIT_WORD(w))
    return ()


def describe(reason: str, log: Sequence[str] = ()) -> str:
    """A failure reason the watchdog gives (after failed, rolled-back, ...) in words; `log`
    (the activation's) names the units behind an exit 4."""
    if reason == "timeout":
        # Why no confirmation came is the deployer's to say (activation.py, from what it
        # saw): the watchdog only knows that none did.
        return "no confirmation within the timeout"
    if reason.startswith("activation-exit-124"):
        return "activation timed out"
    if reason == f"activation-exit-{UNIT_FAILED_EXIT}":
        units = failed_units(log)
        if not units:
            return f"the switch happened but a unit failed (exit {UNIT_FAILED_EXIT})"
        which = "a unit" if len(units) == 1 else "units"
        named = ", ".join(units)
        return f"the switch happened but {which} failed (exit {UNIT_FAILED_EXIT}): {named}"
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


# Seconds of confirmation window a new login gets before its lateness counts as evidence that
# the node stopped answering logins (a login costs ~0.1 s of CPU on an idle node).
LOGIN_GRACE = 2.0


def unconfirmed(final: Marker, login_failure: str | None, confirm_sent: float | None) -> str | None:
    """Why no confirmation came, in words, when the deployer's evidence says that the node, not
    the deployer, stopped answering new ssh logins while the open connection (which brought
    `final`) still worked: typically the new system broke sshd. The evidence is a fresh login
    that failed (`login_failure`, ssh's words), or a confirmation sent with `confirm_sent`
    seconds of the window left that reached the node only after it (the watchdog confirms at
    once: the login stalled, as under a frozen sshd that the rollback thaws). None otherwise."""
    if final.reason != "timeout":
        return None
    why = login_failure
    if why is None and confirm_sent is not None and confirm_sent >= LOGIN_GRACE:
        why = (
            f"the confirmation, sent over a new ssh login {confirm_sent:.0f} s before the "
            "window closed, reached the node only after it"
        )
    if why is None:
        return None
    return (
        f"{describe(final.reason)}: the node stopped answering new ssh logins ({why}) while "
        "the deployer's open connection still worked; did the new system break sshd?"
    )


@dataclass(frozen=True, slots=True)
class Lock:
    """Who holds a node's activation lock. `activation_id` is None when the lock's text names
    no activation nixherd made (then there is nothing to follow)."""

    activation_id: str | None
    pid: str = "?"
    since: str = "?"
    by: str = "?"

    @classmethod
    def from_link(cls, text: str) -> Lock:
        """The lock symlink's text, "ID PID SINCE BY"."""
        words = text.split()
        first = words[0] if words else ""
        rest = [*words[1:4], "?", "?", "?"]
        return cls(first if ACTIVATION_ID.match(first) else None, rest[0], rest[1], rest[2])

    @classmethod
    def from_refusal(cls, line: str) -> Lock | None:
        """`start`'s "locked since=S pid=P by=B" line; None for any other line."""
        if not line.startswith("locked "):
            return None
        words = line.split()[1:]
        fields = dict(w.split("=", 1) for w in words if "=" in w)
        return cls(None, fields.get("pid", "?"), fields.get("since", "?"), fields.get("by", "?"))
