"""Events the core emits while it works on nodes; the CLI decides how to show them.

The core never prints. Long operations take an `EventSink` (any callable) and report what each
node is doing; a live view, plain `node | line` output, log files and the JSON report are all
renderings of the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Stage(Enum):
    """A step of a node's pipeline (and of the other per-node operations)."""

    EVAL = "eval"
    BUILD = "build"
    KEYS = "keys"
    COPY = "copy"
    PROFILE = "profile"
    ACTIVATE = "activate"
    REBOOT = "reboot"
    CHECK = "check"
    CONFIRM = "confirm"
    DATA = "data"
    EXEC = "exec"
    STATUS = "status"
    PROBE = "probe"  # one round trip reading what the node runs now


class Outcome(Enum):
    """How a node ended."""

    OK = "ok"
    UP_TO_DATE = "up to date"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    NOT_ATTEMPTED = "not attempted"
    INTERRUPTED = "interrupted"

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.INTERRUPTED)


@dataclass(frozen=True, slots=True)
class StageStarted:
    node: str
    stage: Stage


@dataclass(frozen=True, slots=True)
class StageFinished:
    node: str
    stage: Stage
    seconds: float


# The `node` of events about the whole run rather than one node (the one `nix-store --realise`).
RUN_WIDE = "*"


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line of output from a command run for a node (never carries secret bytes)."""

    node: str
    line: str


@dataclass(frozen=True, slots=True)
class NodeFinished:
    node: str
    outcome: Outcome
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A Ctrl-C while nodes are in flight (named in the order they started). The first
    (`aborting` False): no new node starts, those in flight go on. The second: the activations
    in flight are aborted (their nodes roll back) and the run ends within seconds."""

    in_flight: tuple[str, ...]
    aborting: bool


Event = StageStarted | StageFinished | LogLine | NodeFinished | Interrupted
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """An EventSink that ignores everything (for library callers that do not watch)."""
