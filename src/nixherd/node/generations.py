"""A node's system profile generations, read with the watchdog's `info` mode (for rollback)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nixherd.node.watchdog import STORE_PATH, watchdog_script
from nixherd.run.ssh import Connection


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
            if number.isdigit() and STORE_PATH.match(path.strip()):
                systems[int(number)] = path.strip()
    return Generations(current, profile, systems)


def generations(conn: Connection) -> Generations:
    """Read the node's running system and its system profile's generations (mode `info`)."""
    result = conn.run(
        ["sh", "-s", "--", "-", "info"],
        input=watchdog_script(),
        timeout=60,
        what="read generations",
    )
    return parse_generations(result.stdout)
