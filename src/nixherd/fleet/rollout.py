"""Staged rollouts: canaries, batches and the failure budget that stops a rollout."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from nixherd.errors import UsageError

_AMOUNT = re.compile(r"^(\d{1,9})(%?)$")


@dataclass(frozen=True, slots=True)
class Amount:
    """A count of nodes given absolutely (`5`) or as a share of the selection (`25%`)."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str, *, option: str = "value") -> Amount:
        match = _AMOUNT.match(text.strip())
        if not match:
            raise UsageError(f"{option}: expected N or P%, got {text!r}")
        value, percent = int(match.group(1)), bool(match.group(2))
        if percent and value > 100:
            raise UsageError(f"{option}: a percentage must be 0..100, got {text!r}")
        return cls(value, percent)

    def of(self, total: int) -> int:
        """The number of nodes this amount means out of `total` (percentages round up)."""
        if not self.percent:
            return self.value
        return math.ceil(total * self.value / 100)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


class WaveKind(Enum):
    CANARY = "canary"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class Wave:
    """Nodes started together; the next wave starts only when this one is done."""

    kind: WaveKind
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rollout:
    """How a deploy is staged: `canary` nodes first, then batches, within a failure budget."""

    canary: int = 0
    batch: Amount | None = None
    max_failures: Amount | None = None

    def waves(self, nodes: Sequence[str]) -> tuple[Wave, ...]:
        """Split `nodes` (in order) into the canary wave and the batches that follow it."""
        names = tuple(nodes)
        if self.canary < 0:
            raise UsageError(f"the canary count must be >= 0, got {self.canary}")
        waves: list[Wave] = []
        canaries, rest = names[: self.canary], names[self.canary :]
        if canaries:
            waves.append(Wave(WaveKind.CANARY, canaries))
        if not rest:
            return tuple(waves)
        size = len(rest) if self.batch is None else self.batch.of(len(names))
        # A batch of zero would never finish the rollout; the smallest useful batch is one node.
        size = max(size, 1)
        for start in range(0, len(rest), size):
            waves.append(Wave(WaveKind.BATCH, rest[start : start + size]))
        return tuple(waves)

    def failure_limit(self, total: int) -> int | None:
        """How many failed nodes are tolerated; None means no limit."""
        return None if self.max_failures is None else self.max_failures.of(total)

    def should_stop(self, *, failures: int, total: int, canary_failed: bool) -> bool:
        """True once no new node may start: a canary failed or failures passed the limit."""
        if canary_failed:
            return True
        limit = self.failure_limit(total)
        return limit is not None and failures > limit

    def describe(self, total: int) -> str:
        parts = []
        if self.canary:
            parts.append(f"{self.canary} canary node(s) first")
        if self.batch is not None:
            parts.append(f"batches of {self.batch} ({max(self.batch.of(total), 1)} nodes)")
        limit = self.failure_limit(total)
        if limit is not None:
            parts.append(f"stop after more than {limit} failure(s)")
        return ", ".join(parts) if parts else "all nodes at once"
