"""The one place that speaks SSH: targets, ControlMaster connections, remote commands, NIX_SSHOPTS.

Uses the system `ssh` client so that ~/.ssh/config, agents and ProxyJump keep working. Remote
commands are argv lists, quoted with shlex at exactly one boundary (`Connection.argv`). Host keys
are always verified: every ssh (and `nix copy`, through NIX_SSHOPTS) gets
`-o StrictHostKeyChecking=yes`, or `accept-new` where the inventory's `host_key_policy` opts in,
never `no`. On ssh's command line it beats any ssh_config (ssh keeps the first value it obtains,
and the command line comes first); options that would replace the pinning are refused
(`FORBIDDEN_SSH_OPTIONS`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from nixherd.errors import UsageError
from nixherd.run import process
from nixherd.run.process import LineCallback, Result
from nixherd.sshrules import FORBIDDEN_SSH_OPTIONS, HOST_KEY_POLICIES

# Re-checked here although the inventory validates them: this is the boundary where a value
# becomes ssh argv, and a host such as `-oProxyCommand=...` must never get through.
_HOST = re.compile(r"^(?!-)[A-Za-z0-9_.:%\[\]\-]{1,253}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,31}$")
_OPTION = re.compile(r"^[A-Za-z]+=[^\s\x00]*$")

# Detect a dead host within ~15 s instead of TCP's minutes; never prompt.
BASE_OPTIONS: tuple[str, ...] = (
    "BatchMode=yes",
    "ConnectTimeout=10",
    "ServerAliveInterval=5",
    "ServerAliveCountMax=3",
)


class Elevation(Enum):
    """How remote commands that need root get it."""

    NONE = "none"
    SUDO = "sudo"


@dataclass(frozen=True, slots=True)
class Target:
    """How to reach one node: the deployment fields of its resolved inventory entry."""

    node: str
    host: str
    user: str = "root"
    port: int = 22
    ssh_config: str | None = None
    options: tuple[str, ...] = ()
    host_key_policy: str = "strict"

    def __post_init__(self) -> None:
        if not _HOST.match(self.host):
            raise UsageError(f"{self.node}: unsafe host {self.host!r}")
        if not _USER.match(self.user):
            raise UsageError(f"{self.node}: unsafe user {self.user!r}")
        if not 1 <= self.port <= 65535:
            raise UsageError(f"{self.node}: port must be 1..65535, got {self.port}")
        for opt in self.options:
            if not _OPTION.match(opt) or opt.split("=", 1)[0].lower() in FORBIDDEN_SSH_OPTIONS:
                raise UsageError(f"{self.node}: unsafe ssh option {opt!r}")
        if self.host_key_policy not in HOST_KEY_POLICIES:
            raise UsageError(
                f"{self.node}: host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}, "
                f"got {self.host_key_policy!r}"
            )
        if self.ssh_config is not None and re.search(r"\s", self.ssh_config):
            # NIX_SSHOPTS is split on whitespace by nix: such a path cannot be passed on.
            raise UsageError(f"{self.node}: ssh_config path may not contain whitespace")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def elevation(self) -> Elevation:
        return Elevation.NONE if self.user == "root" else Elevation.SUDO


def _short_dir() -> str:
    # Unix socket paths are limited to ~104 bytes: keep the control directory short.
    path = tempfile.mkdtemp(prefix="nh-", dir="/tmp")
    # If nixherd dies without close(), its guardian stops the master and removes the directory.
    process.own_directory(path)
    return path


@dataclass
class Connection:
    """One multiplexed SSH connection to a node, reused by every step and by `nix copy`."""

    target: Target
    control_dir: str = field(default_factory=_short_dir)
    persist_seconds: int = 120

    @property
    def control_path(self) -> str:
        digest = hashlib.sha1(f"{self.target.destination}:{self.target.port}".encode()).hexdigest()[
            :16
        ]
        return os.path.join(self.control_dir, digest)

    def options(self, *, multiplex: bool = True) -> list[str]:
        """ssh options (without the destination), shared by ssh and NIX_SSHOPTS."""
        opts: list[str] = []
        if self.target.ssh_config:
            opts += ["-F", self.target.ssh_config]
        opts += ["-p", str(self.target.port)]
        # First of all options: nothing after it (nor any config file) can weaken it.
        opts += ["-o", f"StrictHostKeyChecking={HOST_KEY_POLICIES[self.target.host_key_policy]}"]
        for opt in (*BASE_OPTIONS, *self.target.options):
            opts += ["-o", opt]
        if multiplex:
            opts += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control_path}",
                "-o",
                f"ControlPersist={self.persist_seconds}",
            ]
        else:
            opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        return opts

    def argv(
        self, remote: Sequence[str], *, elevate: bool = False, multiplex: bool = True
    ) -> list[str]:
        """The local argv running `remote` on the node; the only place remote argv is quoted."""
        words = list(remote)
        if elevate and self.target.elevation is Elevation.SUDO:
            words = ["sudo", "-n", "--", *words]
        return [
            "ssh",
            "-T",
            "-x",
            *self.options(multiplex=multiplex),
            "--",
            self.target.destination,
            shlex.join(words),
        ]

    def run(
        self,
        remote: Sequence[str],
        *,
        elevate: bool = False,
        multiplex: bool = True,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: LineCallback | None = None,
        what: str | None = None,
    ) -> Result:
        """Run `remote` (an argv list) on the node and return its result."""
        return process.run(
            self.argv(remote, elevate=elevate, multiplex=multiplex),
            input=input,
            timeout=timeout,
            check=check,
            on_line=on_line,
            what=what or remote[0],
            node=self.target.node,
        )

    def nix_sshopts(self) -> str:
        """NIX_SSHOPTS for `nix copy`: the same options, so nix rides this ControlMaster."""
        return " ".join(self.options())

    def nix_env(self) -> Mapping[str, str]:
        return {"NIX_SSHOPTS": self.nix_sshopts()}

    def store_uri(self, scheme: str = "ssh") -> str:
        """The nix store URI of the node (`ssh://` or `ssh-ng://`); port and options via env."""
        return f"{scheme}://{self.target.destination}"

    def close(self) -> None:
        """Stop the master (if any) and remove the control directory."""
        if os.path.exists(self.control_path):
            process.run(
                ["ssh", *self.options(), "-O", "exit", "--", self.target.destination],
                check=False,
                timeout=10,
            )
        # The exiting master may remove its socket between our check and our unlink: that must
        # not leave the directory behind.
        with contextlib.suppress(OSError):
            os.unlink(self.control_path)
        with contextlib.suppress(OSError):
            os.rmdir(self.control_dir)  # a shared or non-empty dir stays: not worth failing over
        if not os.path.exists(self.control_dir):
            process.disown_directory(self.control_dir)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
