"""The typed entries of a node's named tables: health checks, keys and data files.

Each is declared here once: its fields, their defaults and what they mean. The resolver builds
them once (`parse_entries.py` validates the tables and builds these values); `Node.checks`,
`Node.keys` and `Node.data` hold them, by name, in declaration order. The node/ modules run
them (nixherd.node.checks, .keys, .data) and never read an inventory table.

Keys, data files and checks are deployer-side: never part of the Nix data (editing them must
never change an evaluation or a build, and a key's source has no business in a NixOS module).
Each entry keeps the table it was built from (`declared`, as written after the layers were
merged) for `show` and `to_data(deployer=True)`, which print the inventory as declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

KEY_DIR: Final = "/run/keys"  # where a key goes on the node when its `dest` is not given
DATA_BACKUP_SUFFIX: Final = ".nixherd-prev"  # a data file's previous copy (nixherd.node.data)


def fill(template: str, *, host: str, node: str) -> str:
    """Fill {host} and {node} (plain replacement: no format-string attribute access)."""
    # An IPv6 address needs brackets inside a URL or host:port.
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return template.replace("{host}", shown).replace("{node}", node)


# --- health checks (`checks.<name>`) --------------------------------------------------------------


class CheckKind(Enum):
    """What a check does; named by the key that carries it in the inventory."""

    COMMAND = "command"  # argv run on the target; healthy when it exits 0
    HTTP = "http"  # URL fetched from the deployer
    TCP = "tcp"  # host:port the deployer connects to
    UNIT = "unit"  # systemd unit that must be active on the target (`systemctl is-active`)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One health check of a node, as declared (placeholders not yet filled in)."""

    name: str
    kind: CheckKind
    # command: the argv run on the target (healthy when it exits 0).
    command: tuple[str, ...] = ()
    # http: the URL fetched from the deployer ({host}, {node} are filled in).
    url: str = ""
    # tcp: the host:port the deployer connects to ({host}, {node} are filled in).
    address: str = ""
    # unit: the systemd unit (validate.unit_name_problem's rules) that must be active.
    unit: str = ""
    # http: the expected status, 100..599.
    status: int = 200
    # http: a regex the body must match.
    body: str | None = None
    # Seconds per attempt, 0.01..3600.
    timeout: float = 5.0
    # Attempts after the first failure, 0..1000.
    retries: int = 2
    # Seconds between attempts, 0..3600.
    interval: float = 1.0
    declared: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def budget(self) -> float:
        """The longest this check can take, in seconds."""
        return (self.retries + 1) * self.timeout + self.retries * self.interval

    def describe(self, *, host: str = "{host}", node: str = "{node}") -> str:
        match self.kind:
            case CheckKind.COMMAND:
                return "command " + " ".join(self.command)
            case CheckKind.HTTP:
                return f"http {fill(self.url, host=host, node=node)}"
            case CheckKind.TCP:
                return f"tcp {fill(self.address, host=host, node=node)}"
            case CheckKind.UNIT:
                return f"unit {self.unit}"


# --- keys (`keys.<name>`) -------------------------------------------------------------------------


class SourceKind(Enum):
    """Where a key's bytes come from on the deployer; named by the key that carries it."""

    FILE = "file"  # a file, relative to the inventory's directory
    COMMAND = "command"  # an argv run in the inventory's directory (sops, pass, a vault CLI)
    ENV = "env"  # an environment variable of nixherd


class Upload(Enum):
    """When a key is written, relative to activation."""

    PRE = "pre-activation"
    POST = "post-activation"


@dataclass(frozen=True, slots=True)
class Key:
    """One secret key of a node: where it comes from and where it goes."""

    name: str
    kind: SourceKind
    # file: (path as written, relative to the inventory's directory,); command: argv;
    # env: (variable name,)
    source: tuple[str, ...]
    # The file on the node; `KEY_DIR/<name>` when not given (see `Key.default_dest`).
    dest: str
    user: str = "root"
    group: str = "root"
    mode: int = 0o400  # permission bits, written as an octal string ("0400") in the inventory
    upload: Upload = Upload.PRE
    declared: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def default_dest(name: str) -> str:
        return f"{KEY_DIR}/{name}"


# --- data files (`data.<name>`) -------------------------------------------------------------------


class Format(Enum):
    """How a data file is rendered."""

    JSON = "json"  # `source` (or all vars) as JSON
    TOML = "toml"  # `source` (a table) as TOML
    TEXT = "text"  # `template` filled from vars


@dataclass(frozen=True, slots=True)
class DataFile:
    """One runtime data file of a node, rendered from its vars and pushed without a rebuild."""

    name: str
    path: str  # the file on the node (absolute)
    format: Format = Format.JSON
    # json/toml: the dotted var path rendered (None: all vars); text: unused.
    source: str | None = None
    # text: the template (nixherd.inventory.template); json/toml: unused.
    template: str | None = None
    user: str = "root"
    group: str = "root"
    mode: int = 0o644  # permission bits, written as an octal string ("0644") in the inventory
    # Run on the node after the file changed (an argv); () for none.
    reload: tuple[str, ...] = ()
    declared: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def backup(self) -> str:
        """Where the previous copy is kept while a push may still be undone."""
        return self.path + DATA_BACKUP_SUFFIX
