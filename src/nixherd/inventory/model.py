"""The resolved inventory: nodes with every field merged, and where each value came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nixherd.inventory.fields import BUILTIN, NIX_FIELDS, NODE_FIELDS, Merge

if TYPE_CHECKING:  # types only: `nixherd nodes` loads neither the entries nor the ssh layer
    from nixherd.inventory.entries import DataFile, HealthCheck, Key
    from nixherd.run.ssh import Target


class Origin(Enum):
    """The layer a resolved value comes from."""

    DEFAULT = "default"  # nixherd's built-in default
    DEFAULTS = "defaults"  # the inventory's [defaults]
    ROLE = "role"  # [roles.<role>]
    NODE = "node"  # [nodes.<name>]
    TARGET = "target"  # [[roles.<role>.targets]]


@dataclass(frozen=True, slots=True)
class TerraformOrigin:
    """A value from a Terraform/OpenTofu output (`NAME.OUTPUT`): a fan-out target made from it,
    or (`var`) a value put into vars by `{ terraform = ... }` (inventory/terraform.py)."""

    ref: str
    var: bool = False

    @property
    def value(self) -> str:
        """Shown as an Origin's value is: `terraform:NAME.OUTPUT`."""
        return f"terraform:{self.ref}"


# One layer of a node: where it comes from and its table, exactly as parsed (a vars value taken
# from Terraform adds a layer of its own after the table holding it, for its origin).
Layer = tuple[Origin | TerraformOrigin, Mapping[str, Any]]


class Reachable(Protocol):
    """The fields `target_of` reads: a node's name and how ssh reaches it."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def ssh_options(self) -> Sequence[str]: ...
    @property
    def host_key_policy(self) -> str: ...
    @property
    def ssh_config(self) -> str | None: ...


def target_of(node: Reachable) -> Target:
    """How the node is reached over ssh (`Node.target`); its values are validated there (at the
    argv boundary), so an unsafe one fails this node only, naming it."""
    # Imported here: the ssh layer loads subprocess, which `nixherd nodes` (reading the
    # inventory only) must start without.
    from nixherd.run.ssh import Target

    return Target(
        node=node.name,
        host=node.host,
        user=node.user,
        port=node.port,
        ssh_config=node.ssh_config,
        options=tuple(node.ssh_options),
        host_key_policy=node.host_key_policy,
    )


@dataclass(frozen=True)
class Node:
    """One machine of the fleet, fully resolved (docs/inventory.md, "Resolved node").

    `vars` and `config` may share sub-tables with other nodes of the same role: treat them as
    read-only (`to_data()` hands out copies).
    """

    name: str
    role: str | None
    host: str
    user: str | None  # None: ssh decides (its config's User, else the local login name)
    port: int | None  # None: ssh decides (its config's Port, else 22)
    system: str
    tags: tuple[str, ...]
    modules: tuple[str, ...]
    vars: Mapping[str, Any] = field(hash=False)
    config: Mapping[str, Any] = field(hash=False)
    ssh_options: tuple[str, ...] = ()
    host_key_policy: str = "strict"
    # Deployer-side only, never in `to_data()` (so never in Nix): secrets to upload
    # (nixherd.node.keys) and runtime data files (nixherd.node.data), by entry name, in
    # declaration order; typed entries (inventory/entries.py) built once by the resolver.
    keys: Mapping[str, Key] = field(default_factory=dict, hash=False)
    data: Mapping[str, DataFile] = field(default_factory=dict, hash=False)
    # Deployer-side only too: health checks (nixherd.node.checks), by name.
    checks: Mapping[str, HealthCheck] = field(default_factory=dict, hash=False)
    # Deployer-side too: the binary cache (inventory/cachecfg.py), its layers deep-merged.
    cache: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # Deployer-side too: the inventory's `[defaults] ssh_config`, absolute (see `target`).
    ssh_config: str | None = field(default=None, compare=False)
    # The key path of the node's own table (`nodes.web-1`, `roles.vps.targets[2]`), for messages.
    source: str = field(default="", compare=False)
    # The tables the node was merged from, kept so that origins are computed only when asked for.
    layers: tuple[Layer, ...] = field(default=(), compare=False, repr=False, hash=False)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Node:
        """A node from a dict holding every field, already validated (the resolver's path); the
        dict becomes the node's own storage, so the caller must not keep using it.

        It skips the generated `__init__`: a frozen dataclass sets each field through
        `object.__setattr__`, which costs more than all the rest of resolving a node (10,000 nodes:
        27 ms against 4 ms). This is also why Node has no `__slots__`.
        """
        node = object.__new__(cls)
        object.__setattr__(node, "__dict__", fields)
        return node

    @property
    def target(self) -> Target:
        """How the node is reached over ssh (see `target_of`)."""
        return target_of(self)

    def to_data(self, *, deployer: bool = False) -> dict[str, Any]:
        """The resolved node as JSON-able data, in the shape the Nix resolver produces; with
        `deployer`, also the deployer-side fields Nix never sees (keys, data)."""
        data: dict[str, Any] = {"name": self.name, "role": self.role}
        for f in NODE_FIELDS if deployer else NIX_FIELDS:
            value = getattr(self, f.name)
            if f.merge is Merge.NAMED:
                # Typed entries are shown as the inventory declares them.
                value = {name: entry.declared for name, entry in value.items()}
            data[f.name] = plain(value)
        return data

    def summary(self) -> dict[str, Any]:
        """The fields of a node listing (`nixherd nodes --json`)."""
        return {
            "name": self.name,
            "role": self.role,
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "tags": list(self.tags),
        }

    def origins(self, *, deployer: bool = False) -> dict[str, Any]:
        """Where every value of `to_data(deployer=...)` came from, in the same shape: an `Origin`
        for a scalar, one per element for a list field, one per leaf for vars/config."""
        return provenance(self, deployer=deployer)


def plain(value: Any) -> Any:
    """A fresh JSON-able copy: tuples become lists, tables are copied all the way down."""
    if isinstance(value, dict):
        return {key: plain(element) for key, element in value.items()}
    if isinstance(value, list | tuple):
        return [plain(element) for element in value]
    return value


@dataclass(frozen=True, slots=True)
class Inventory:
    """A loaded, validated inventory."""

    path: Path  # the inventory file, absolute
    nodes: Mapping[str, Node]  # by name, sorted by name
    roles: tuple[str, ...]  # role names, sorted
    # `[defaults] ssh_config`, made absolute (a str, as `ssh.Target` takes it), or None.
    ssh_config: str | None = None
    # `[defaults] builders`: Nix remote builders, as declared (inventory/cachecfg.py renders them).
    builders: tuple[Mapping[str, Any], ...] = ()
    # The names of its `[terraform.NAME]` sources (docs/terraform.md).
    terraform_sources: tuple[str, ...] = ()


# --- provenance: the merge replayed, recording who set what ---------------------------------------


def _leaf_origins(value: Any, origin: Origin | TerraformOrigin) -> Any:
    # An empty table is a leaf: it has an origin, not an empty tree of them.
    if type(value) is dict and value:
        return {key: _leaf_origins(element, origin) for key, element in value.items()}
    return origin


def _deep_origins(
    earlier: Mapping[str, Any],
    origins: Mapping[str, Any],
    later: Mapping[str, Any],
    origin: Origin | TerraformOrigin,
) -> tuple[dict[str, Any], dict[str, Any]]:
    merged, merged_origins = dict(earlier), dict(origins)
    for key, value in later.items():
        old = merged.get(key)
        if type(old) is dict and type(value) is dict:
            if not value:
                continue  # merging an empty table changes nothing (as in deep_merge)
            old_origins = origins.get(key)
            if not isinstance(old_origins, dict):
                old_origins = {}  # an empty table (a leaf) gets keys
            merged[key], merged_origins[key] = _deep_origins(old, old_origins, value, origin)
        else:
            merged[key], merged_origins[key] = value, _leaf_origins(value, origin)
    return merged, merged_origins


def _field_origins(f_name: str, merge: Merge, node: Node) -> Any:
    """Replay the merge of one field over the node's layers, recording who set what."""
    value: Any = BUILTIN.get(f_name)
    origins: Any
    if merge is Merge.UNION:
        origins = [Origin.DEFAULT] * len(value)
    elif merge is Merge.DEEP or merge is Merge.NAMED:
        origins = {}  # built-in defaults of tables are empty
    else:
        origins = Origin.DEFAULT
    for origin, table in node.layers:
        if f_name not in table:
            continue
        later = table[f_name]
        if merge is Merge.REPLACE:
            value, origins = later, origin
        elif merge is Merge.UNION:
            for element in later:
                if element not in value:
                    value = (*value, element)
                    origins = [*origins, origin]
        elif merge is Merge.DEEP:
            value, origins = _deep_origins(value, origins, later, origin)
        elif merge is Merge.NAMED:
            value = {**value, **later}
            origins = {**origins, **dict.fromkeys(later, origin)}
        else:  # pragma: no cover - only node fields reach here
            raise AssertionError(merge)
    return origins


def provenance(node: Node, *, deployer: bool = False) -> dict[str, Any]:
    """The origin of every value of `node.to_data(deployer=...)`, in the same shape."""
    # The node's own table: the last layer that is not a value put into vars.
    own = next(
        (o for o, _ in reversed(node.layers) if not (isinstance(o, TerraformOrigin) and o.var)),
        Origin.NODE,
    )
    role_origin = Origin.DEFAULT if node.role is None else own
    result: dict[str, Any] = {"name": own, "role": role_origin}
    for f in NODE_FIELDS:
        if f.nix or deployer:
            result[f.name] = _field_origins(f.name, f.merge, node)
    return result
