"""The one place that speaks SSH: targets, ControlMaster connections, remote commands, NIX_SSHOPTS.

Uses the system `ssh` client so that ~/.ssh/config (or the inventory's `ssh_config`), agents,
aliases, `HostName`, `ProxyJump` and `IdentityFile` keep working. What the inventory does not set
is left to ssh: no `-p` without a `port`, no `user@` with `user = false` (Colmena does the same with
a null targetPort/targetUser: zhaofengli/colmena src/nix/host/ssh.rs, `ssh_target` and
`ssh_options`). Precedence, as ssh keeps the first value it obtains: the inventory's fields, then
its `ssh_options`, then nixherd's defaults (`BASE_OPTIONS`, which `ssh_options` may override), then
the ssh config file, then ssh's own defaults.

Remote commands are argv lists, quoted with shlex at exactly one boundary (`Connection.argv`).
Host keys are always verified: every ssh (and `nix copy`, through NIX_SSHOPTS) gets
`-o StrictHostKeyChecking=yes`, or `accept-new` where the inventory's `host_key_policy` opts in,
never `no`, as the first `-o` of all: it beats any ssh_config; options that would replace the
pinning are refused (`FORBIDDEN_SSH_OPTIONS`). A failed verification is explained
(`run/hostkeys.py`): the key offered, and how to trust it.
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

from nixherd.errors import CommandError, HostKeyError, UsageError
from nixherd.run import hostkeys, process
from nixherd.run.process import LineCallback, Result
from nixherd.sshrules import FORBIDDEN_SSH_OPTIONS, HOST_KEY_POLICIES

# Re-checked here although the inventory validates them: this is the boundary where a value
# becomes ssh argv, and a host such as `-oProxyCommand=...` must never get through.
_HOST = re.compile(r"^(?!-)[A-Za-z0-9_.:%\[\]\-]{1,253}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,31}$")
_OPTION = re.compile(r"^[A-Za-z]+=[^\s\x00]*$")

# ssh exits 255 when it fails itself (cannot connect, log in or verify the host key).
SSH_FAILED = 255

# Detect a dead host within ~15 s instead of TCP's minutes; never prompt. The node's `ssh_options`
# may override all but BatchMode (`OVERRIDABLE`): they come first on the command line.
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
    user: str | None = "root"  # None: ssh decides (the config's User, else the local login)
    port: int | None = None  # None: ssh decides (the config's Port, else 22)
    ssh_config: str | None = None
    options: tuple[str, ...] = ()
    host_key_policy: str = "strict"

    def __post_init__(self) -> None:
        if not _HOST.match(self.host):
            raise UsageError(f"{self.node}: unsafe host {self.host!r}")
        if self.user is not None and not _USER.match(self.user):
            raise UsageError(f"{self.node}: unsafe user {self.user!r}")
        if self.port is not None and not 1 <= self.port <= 65535:
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
        return self.host if self.user is None else f"{self.user}@{self.host}"

    @property
    def elevation(self) -> Elevation | None:
        """None when ssh decides the user (`Connection.elevation` then asks ssh)."""
        if self.user is None:
            return None
        return Elevation.NONE if self.user == "root" else Elevation.SUDO

    def describe(self) -> str:
        """Where the node is reached, for messages: what the inventory says, nothing resolved."""
        if self.port is None:
            return f"{self.destination} (port from ssh)"
        return f"{self.destination} port {self.port}"


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
    # What `ssh -G` resolved for this node, asked at most once (see `settings`).
    _settings: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def control_path(self) -> str:
        digest = hashlib.sha1(self.target.describe().encode()).hexdigest()[:16]
        return os.path.join(self.control_dir, digest)

    def options(self, *, multiplex: bool = True) -> list[str]:
        """ssh options (without the destination), shared by ssh and NIX_SSHOPTS."""
        opts: list[str] = []
        if self.target.ssh_config:
            opts += ["-F", self.target.ssh_config]
        if self.target.port is not None:
            opts += ["-p", str(self.target.port)]
        # First of all options: nothing after it (nor any config file) can weaken it.
        opts += ["-o", f"StrictHostKeyChecking={HOST_KEY_POLICIES[self.target.host_key_policy]}"]
        # The node's options before nixherd's defaults, so that theirs win (ssh keeps the first).
        for opt in (*self.target.options, *BASE_OPTIONS):
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
        if elevate and self.elevation is Elevation.SUDO:
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
        """Run `remote` (an argv list) on the node and return its result.

        A host key ssh refused raises HostKeyError (what the host offers, how to trust it), even
        with `check=False`: the command never ran.
        """
        try:
            result = process.run(
                self.argv(remote, elevate=elevate, multiplex=multiplex),
                input=input,
                timeout=timeout,
                check=check,
                on_line=on_line,
                what=what or remote[0],
                node=self.target.node,
            )
        except CommandError as exc:
            if exc.returncode == SSH_FAILED and hostkeys.refused(exc.output):
                error = self.host_key_error()
                if error is not None:
                    raise error from exc
            raise
        if result.returncode == SSH_FAILED and hostkeys.refused(result.stdout + result.stderr):
            error = self.host_key_error()
            if error is not None:
                raise error
        return result

    @property
    def elevation(self) -> Elevation:
        """Whether commands that need root go through sudo: by the inventory's user, else by the
        user ssh logs in as (`ssh -G`, asked once: about 7 ms)."""
        known = self.target.elevation
        if known is not None:
            return known
        return Elevation.NONE if self.settings().get("user") == "root" else Elevation.SUDO

    def settings(self) -> Mapping[str, str]:
        """ssh's resolved settings for this node (`ssh -G`: config files read, nothing connected):
        lower-case keys, the first value of each."""
        if self._settings is None:
            result = process.run(
                ["ssh", "-G", *self.options(multiplex=False), "--", self.target.destination],
                timeout=30,
                what="ssh -G",
                node=self.target.node,
            )
            settings: dict[str, str] = {}
            for line in result.stdout.splitlines():
                key, _, value = line.partition(" ")
                settings.setdefault(key.lower(), value)
            self._settings = settings
        return self._settings

    def trust_argv(self) -> list[str]:
        """The ssh command that records the node's host key as ssh itself would (the alias's
        name, the known_hosts file the config names): the node's own options, accept-new."""
        opts: list[str] = []
        if self.target.ssh_config:
            opts += ["-F", self.target.ssh_config]
        if self.target.port is not None:
            opts += ["-p", str(self.target.port)]
        opts += ["-o", "StrictHostKeyChecking=accept-new"]
        for opt in self.target.options:
            opts += ["-o", opt]
        return ["ssh", *opts, "--", self.target.destination, "true"]

    def host_key_error(self) -> HostKeyError | None:
        """Why ssh refused the node's host key, explained; None when a second look (`ssh -v`,
        which logs the key offered) finds no host-key problem after all."""
        try:
            argv = ["ssh", "-v", "-T", "-x", *self.options(multiplex=False)]
            seen = process.run(
                [*argv, "--", self.target.destination, "true"],
                check=False,
                timeout=30,
                what="ssh -v",
                node=self.target.node,
            )
            verdict = hostkeys.verdict(seen.stderr)
            if verdict is None:
                return None
            settings = self.settings()
        except CommandError:
            return None
        return HostKeyError(
            hostkeys.explain(
                verdict,
                known_hosts=settings.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0],
                trust=self.trust_argv(),
                policy=self.target.host_key_policy,
            )
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
