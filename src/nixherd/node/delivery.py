"""How a node's system reaches its store: the pipeline's replaceable copy step.

Three strategies: push the built closure from here (`nix copy`, riding the node's ControlMaster
through NIX_SSHOPTS), copy the derivations and build on the node, or substitute from a binary
cache the deployer pushed to once (`FromCache`, which falls back to a direct push when the cache
fails). Each says which way the system went (`Delivered`), for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nixherd.errors import CommandError
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


@dataclass(frozen=True, slots=True)
class Delivered:
    """Which way a node got its system: `way` is "direct" (pushed from here), "cache" or
    "build-on-target"; `cache` the cache's URL when one was meant to be used, and `cache_error`
    why it was not (then `way` is "direct": the fallback)."""

    way: str
    cache: str | None = None
    cache_error: str | None = None


class Delivery(Protocol):
    """Puts a system's closure into a node's store; raises (CommandError) on failure."""

    @property
    def name(self) -> str: ...

    @property
    def builds_locally(self) -> bool:
        """Whether the deployer must have built the system before `deliver`."""
        ...

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> Delivered: ...


@dataclass(frozen=True, slots=True)
class PushFromHere:
    """`nix copy --to ssh://node OUT`: the closure built here, streamed over the node's master."""

    substitute_on_destination: bool = False
    scheme: str = "ssh"
    timeout: float = COPY_TIMEOUT
    # Set when this push stands in for a cache that failed before any node (its push): the
    # report names the cache and why.
    cache: str | None = None
    cache_error: str | None = None

    @property
    def name(self) -> str:
        return "push"

    @property
    def builds_locally(self) -> bool:
        return True

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> Delivered:
        nix.copy(
            [system.out_path],
            to=conn.store_uri(self.scheme),
            env=conn.nix_env(),
            substitute_on_destination=self.substitute_on_destination,
            on_line=on_line,
            timeout=self.timeout,
            node=conn.target.node,
        )
        return Delivered("direct", self.cache, self.cache_error)


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

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> Delivered:
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
        return Delivered("build-on-target")


@dataclass(frozen=True, slots=True)
class FromCache:
    """The node realises its system from the binary cache at `url` (pushed to once by the
    deployer), trusting only `public_key`; when that fails (the cache is down, a path is
    missing or not signed by that key), the node gets a direct push instead, and the result says
    so with the cache's error."""

    url: str
    public_key: str
    fallback: PushFromHere
    timeout: float = COPY_TIMEOUT

    @property
    def name(self) -> str:
        return "cache"

    @property
    def builds_locally(self) -> bool:
        return True

    def deliver(self, conn: Connection, system: System, *, on_line: LineCallback) -> Delivered:
        try:
            conn.run(
                nix.substitute_argv([system.out_path], url=self.url, public_key=self.public_key),
                elevate=True,
                on_line=on_line,
                timeout=self.timeout,
                what="nix-store --realise (from the cache)",
            )
        except CommandError as exc:
            why = _cache_error(exc)
            on_line(f"the cache {self.url} failed ({why}): copying directly instead")
            self.fallback.deliver(conn, system, on_line=on_line)
            return Delivered("direct", self.url, why)
        return Delivered("cache", self.url)


def _cache_error(exc: CommandError) -> str:
    """The line of Nix's output that says why the substitution failed (a refused signature, an
    unreachable cache), else the last one."""
    lines = [line.strip() for line in exc.tail(40).splitlines() if line.strip()]
    for marker in ("not signed by", "unable to download", "Couldn't connect", "error:"):
        for line in lines:
            if marker in line:
                return line.removeprefix("warning: ")
    status = "timed out" if exc.returncode is None else f"exit {exc.returncode}"
    return lines[-1] if lines else status
