"""watchdog (the client): how following reads the status lines a node sends.

The ssh calls are faked here (what each `wait` prints and how it exits); the watchdog itself runs
for real in tests/lab/safety and in test_activation's script tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from nixherd.errors import CommandError
from nixherd.events import Event
from nixherd.node import watchdog
from nixherd.node.protocol import Marker, ProtocolError, Status
from nixherd.node.watchdog import Follower
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

ID = "0123456789abcdef"


@dataclass
class FakeConnection:
    """Answers each call with the next (exit code, output) in `replies`; 255 is a cut ssh."""

    replies: list[tuple[int, str]]
    target: Target = field(default_factory=lambda: Target(node="web-1", host="10.0.0.1"))
    calls: list[Sequence[str]] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], *, on_line: Callable[[str], None] | None = None, **_: Any
    ) -> Result:
        self.calls.append(argv)
        code, out = self.replies.pop(0)
        for line in out.splitlines():
            if on_line is not None:
                on_line(line)
        if code == 255 and not out:
            raise CommandError(argv, code, "")
        return Result(tuple(argv), code, out, "")


def soon() -> float:
    return time.monotonic() + 600


def follower(
    replies: list[tuple[int, str]], events: list[Event]
) -> tuple[Follower, FakeConnection]:
    conn = FakeConnection(replies)
    return Follower(cast(Connection, conn), ID, events.append), conn


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog, "_RETRY", 0.0)


def test_a_status_line_torn_by_a_cut_connection_counts_as_none() -> None:
    # The connection drops while the status line is printed: the torn line is no status, and
    # following goes on with the next call, from the offset streamed so far.
    events: list[Event] = []
    follow, conn = follower(
        [
            (255, "switching\n@nixherd offset=10\n@nixherd status=wai"),
            (0, "\n@nixherd status=waiting offset=10 boot=b/1\n"),
        ],
        events,
    )
    got = follow.wait(deadline=soon())
    assert got == Marker(Status.WAITING, "", 10, "b/1")
    assert len(conn.calls) == 2
    assert conn.calls[1][-3:] == ["10", "120", "0"]
    assert follow.log == ["switching"]


def test_a_malformed_status_line_from_a_call_that_ended_is_a_clear_error() -> None:
    # Not something a cut connection explains: the two sides disagree, and following until the
    # deadline would hide it.
    follow, _ = follower([(0, "\n@nixherd status=waitng offset=10 boot=b/1\n")], [])
    with pytest.raises(ProtocolError, match="unknown watchdog status 'waitng'"):
        follow.wait(deadline=soon())


def test_a_status_from_another_boot_is_rebooted() -> None:
    follow, _ = follower([(0, "\n@nixherd status=activating offset=0 boot=b/2\n")], [])
    follow.boot = "b/1"
    got = follow.wait(deadline=soon())
    assert got == Marker(Status.REBOOTED, "", 0, "b/2")
    assert follow.last == got


def test_following_until_settled_goes_past_waiting() -> None:
    follow, conn = follower(
        [
            (0, "\n@nixherd status=waiting offset=3 boot=b/1\n"),
            (0, "nixherd: rolling back (timeout)\n@nixherd status=rolled-back timeout offset=40\n"),
        ],
        [],
    )
    got = follow.wait(deadline=soon(), until_settled=True)
    assert got is not None and got.status is Status.ROLLED_BACK and got.reason == "timeout"
    assert len(conn.calls) == 2
    assert follow.offset == 40
