"""How a node's system reaches its store: the pipeline's replaceable copy step.

Two strategies today: push the built closure from here (`nix copy`, riding the node's
ControlMaster through NIX_SSHOPTS), or copy the derivations and build on the node. A third
("through a binary cache": upload once, every node substitutes) fits the same `Delivery` shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nixherd.run import nix
from nixherd.run.process import LineCallback
from nixherd.run.ssh import Connection

# A node that stops reading mid-copy must not hold the deploy forever (ServerAlive catches a
# dead link sooner; this bounds a live but stuck one).
COPY_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class System:
    """A node's system to deliver: its derivation and the output path the node will run."""

    drv_path: str
    out_path: str


class Delivery(Protocol):
    """Puts a system's closure into a node's store; raises (CommandError) on failure."""

    @property
    def name(self) -> str: ...

    @property
    def builds_locally(self) -> bool:
        """Whether the deployer must have built the system before `deliver`."""
        ...

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> None: ...


@dataclass(frozen=True, slots=True)
class PushFromHere:
    """`nix copy --to ssh://node OUT`: the closure built here, streamed over the node's master."""

    substitute_on_destination: bool = False
    scheme: str = "ssh"
    timeout: float = COPY_TIMEOUT

    @property
    def name(self) -> str:
        return "push"

    @property
    def builds_locally(self) -> bool:
        return True

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> None:
        nix.copy(
            [system.out_path],
            to=conn.store_uri(self.scheme),
            env=conn.nix_env(),
            substitute_on_destination=self.substitute_on_destination,
            on_line=on_line,
            timeout=self.timeout,
            node=conn.target.node,
        )


@dataclass(frozen=True, slots=True)
class BuildOnTarget:
    """Copy the derivation closure (`nix copy --derivation`), then realise it on the node."""

    substitute_on_destination: bool = False
    scheme: str = "ssh"
    timeout: float = COPY_TIMEOUT

    @property
    def name(self) -> str:
        return "build-on-target"

    @property
    def builds_locally(self) -> bool:
        return False

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> None:
        nix.copy(
            [system.drv_path],
            to=conn.store_uri(self.scheme),
            env=conn.nix_env(),
            derivation=True,
            substitute_on_destination=self.substitute_on_destination,
            on_line=on_line,
            timeout=self.timeout,
            node=conn.target.node,
        )
        conn.run(
            nix.realise_argv([system.drv_path], keep_going=False),
            elevate=True,
            on_line=on_line,
            timeout=self.timeout,
            what="nix-store --realise (on the node)",
        )
