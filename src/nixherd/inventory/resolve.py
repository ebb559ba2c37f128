"""Fan-out and merge: from a parsed inventory document to validated, resolved nodes, with the
origin of every value (computed lazily: only `show` asks for it).

Resolution is docs/inventory.md's one rule: built-in default < [defaults] < [roles.<role>] < the
node (a fan-out target or an explicit node). Every problem is collected before anything is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixherd.errors import InventoryError, Problem
from nixherd.inventory.cachecfg import incomplete
from nixherd.inventory.fastpath import NODE_PLAN, TARGET_PLAN, merge_checked
from nixherd.inventory.fields import (
    BUILTIN,
    DEFAULTS_TABLE,
    NODE_TABLE,
    ROLE_TABLE,
    TARGET_TABLE,
    TOP_LEVEL,
    TableSchema,
    check_node_name,
    check_role_name,
)
from nixherd.inventory.merge import Values, apply_layer
from nixherd.inventory.model import Inventory, Layer, Node, Origin, TerraformOrigin
from nixherd.inventory.normal import destination_clash, endpoint_host
from nixherd.inventory.validate import (
    NO_LETTER,
    got,
    is_name,
    join,
    peer_name_problem,
    shown,
    unknown_field_message,
)

if TYPE_CHECKING:  # only an inventory with Terraform sources loads that module
    from nixherd.inventory.terraform import Terraform

# Every key a node's storage ends up with, so that the per-node copy is made at its final size;
# `add` fills in the placeholders (None, "", ()).
_SKELETON: Values = {
    "name": None,
    "role": None,
    **BUILTIN,
    "host": None,
    "source": "",
    "layers": (),
}


# The named-table fields whose entries the resolver turns into typed values (entries.py).
_ENTRY_FIELDS = ("keys", "data", "checks")


def fanout_name(role: str, host: str) -> str:
    """The name of a fan-out target without `name`: `<role>-<host>`, `.` and `:` turned into `-`."""
    return f"{role}-{host.replace('.', '-').replace(':', '-')}"


class _Resolver:
    def __init__(self, file: str, terraform_snapshot: Mapping[str, Any] | None = None) -> None:
        self.file = file
        self.terraform_snapshot = terraform_snapshot
        self.terraform: Terraform | None = None
        # id(layer table) -> the layers after it for `show`: its vars values taken from Terraform.
        self.extra_layers: dict[int, tuple[Layer, ...]] = {}
        self.problems: list[Problem] = []
        self.built: dict[str, Node] = {}
        self.sources: dict[str, str] = {}  # node name -> key path of its table
        self.endpoints: dict[tuple[str, int | None], str] = {}  # (host, port) -> node name
        # id(merged table) -> (that table, its typed entries); see `entries`.
        self.built_entries: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}
        # `[defaults] ssh_config`, absolute: every node carries it in its ssh target.
        self.ssh_config: str | None = None
        self.builders: tuple[Any, ...] = ()

    def report(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, path, message))

    def report_in(self, file: str, path: str, message: str) -> None:
        self.problems.append(Problem(file, path, message))

    def with_terraform(self, doc: Mapping[str, Any], path: Path) -> Mapping[str, Any]:
        """The document with its vars' `{ terraform = ... }` values put in, when it declares
        Terraform sources or a role takes targets from one (docs/terraform.md)."""
        roles = doc.get("roles")
        fan_out = type(roles) is dict and any(
            type(role) is dict and "targets_from" in role for role in roles.values()
        )
        if "terraform" not in doc and not fan_out:
            return doc
        from nixherd.inventory.terraform import Terraform

        table = doc.get("terraform", {})
        tf = Terraform(table, path, self.file, self.report_in, self.terraform_snapshot)
        self.terraform = tf
        if "terraform" not in doc:
            return doc  # markers in vars are only read with sources declared (as in nix/lib.nix)

        def layer(table: Any, table_path: str) -> Any:
            new, found = tf.substitute(table, table_path)
            if found:
                self.extra_layers[id(new)] = tuple(
                    (TerraformOrigin(ref, var=True), values) for ref, values in found
                )
            return new

        out = dict(doc)
        if "defaults" in doc:
            out["defaults"] = layer(doc["defaults"], "defaults")
        if type(roles) is dict:
            new_roles = {}
            for name, role in roles.items():
                role_path = join("roles", name)
                role = layer(role, role_path)
                targets = role.get("targets") if type(role) is dict else None
                if type(targets) is list:
                    new_targets = [
                        layer(target, f"{role_path}.targets[{index}]")
                        for index, target in enumerate(targets)
                    ]
                    role = {**role, "targets": new_targets}
                new_roles[name] = role
            out["roles"] = new_roles
        nodes = doc.get("nodes")
        if type(nodes) is dict:
            out["nodes"] = {name: layer(node, join("nodes", name)) for name, node in nodes.items()}
        return out

    def own_layers(self, origin: Origin | TerraformOrigin, table: Any) -> tuple[Layer, ...]:
        """The layer of `table`, then those of its vars values taken from Terraform."""
        return ((origin, table), *self.extra_layers.get(id(table), ()))

    def table(self, value: Any, path: str) -> dict[str, Any] | None:
        if type(value) is dict:
            return value
        self.report(path, f"must be a table, {got(value)}")
        return None

    def layer(self, table: dict[str, Any], schema: TableSchema, path: str) -> dict[str, Any]:
        """The table when valid; otherwise its valid keys only (so that resolution can go on and
        find the problems that depend on resolved values), the others reported."""
        found = schema.check(table, path)
        if not found:
            return table
        for key_path, message in found:
            self.report(key_path, message)
        return schema.valid_part(table)

    def run(self, doc: Mapping[str, Any], path: Path) -> Inventory:
        doc = self.with_terraform(doc, path)
        for key in doc:
            if key not in TOP_LEVEL:
                self.report(join("", key), unknown_field_message(key, TOP_LEVEL))

        defaults = self.table(doc.get("defaults", {}), "defaults") or {}
        defaults = self.layer(defaults, DEFAULTS_TABLE, "defaults")
        base = apply_layer(_SKELETON, defaults)
        base_layers = self.own_layers(Origin.DEFAULTS, defaults) if defaults else ()
        ssh_config = defaults.get("ssh_config")
        self.ssh_config = None if ssh_config is None else str(path.parent / ssh_config)
        self.builders = tuple(defaults.get("builders", ()))

        roles = self.table(doc.get("roles", {}), "roles") or {}
        nodes = self.table(doc.get("nodes", {}), "nodes") or {}
        role_values: dict[str, Values] = {}
        role_layers: dict[str, tuple[Layer, ...]] = {}

        # Roles (and their targets) first, then explicit nodes, whatever the order in the file:
        # messages about duplicates are then the same for the same content.
        for role_name, raw_role in roles.items():
            role_path = join("roles", role_name)
            name_ok = self.check_name(check_role_name, role_name, role_path)
            role = self.table(raw_role, role_path)
            if role is None:
                continue
            role = self.layer(role, ROLE_TABLE, role_path)
            values = role_values[role_name] = apply_layer(base, role)
            layers = role_layers[role_name] = (*base_layers, *self.own_layers(Origin.ROLE, role))
            prefix = role_name + "-"
            # A fan-out name is never a hive key (it has a `-`); it has a letter when its role
            # has one, so only the targets of a role without are checked one by one.
            peers_ok = peer_name_problem(prefix) is None
            for index, target in enumerate(role.get("targets", ())):
                target_path = f"{role_path}.targets[{index}]"
                # The fast path (fastpath.py); None sends the target down the reference path.
                fields = merge_checked(values, target, TARGET_PLAN)
                if fields is None or fields["host"] is None:
                    target = self.layer(target, TARGET_TABLE, target_path)
                    fields = apply_layer(values, target)
                name: str | None = target.get("name")
                if name is None:
                    host = fields["host"]
                    if host is None:
                        continue
                    # fanout_name(), inlined: this loop runs once per target.
                    name = prefix + host.replace(".", "-").replace(":", "-")
                    if name_ok and not is_name(name):
                        self.report(
                            target_path,
                            f"the node name made from role and host, {shown(name)}, is not a valid "
                            "name: set `name`",
                        )
                    elif name_ok and not peers_ok and peer_name_problem(name) is not None:
                        self.report(
                            target_path,
                            f"the node name made from role and host, {shown(name)}, is not one "
                            f"the peers can carry: {NO_LETTER}: set `name`",
                        )
                # Inline for the usual node (no vars from Terraform): this loop runs per target.
                if self.extra_layers:
                    own = self.own_layers(Origin.TARGET, target)
                    self.add(name, role_name, fields, target_path, (*layers, *own))
                else:
                    self.add(
                        name, role_name, fields, target_path, (*layers, (Origin.TARGET, target))
                    )
            if "targets_from" in role and self.terraform is not None:
                self.fan_out(role_name, role, values, layers, name_ok)

        for node_name, raw_node in nodes.items():
            node_path = join("nodes", node_name)
            self.check_name(check_node_name, node_name, node_path)
            node = self.table(raw_node, node_path)
            if node is None:
                continue
            node_role: Any = node.get("role")
            fields = None  # the fast path first (fastpath.py), then the reference path if None
            if node_role is None:
                values, layers = base, base_layers
                fields = merge_checked(values, node, NODE_PLAN)
            elif type(node_role) is str and node_role in role_values:
                values, layers = role_values[node_role], role_layers[node_role]
                fields = merge_checked(values, node, NODE_PLAN)
            if fields is None:
                node = self.layer(node, NODE_TABLE, node_path)
                node_role = node.get("role")
                if node_role is None:
                    values, layers = base, base_layers
                elif node_role in role_values:
                    values, layers = role_values[node_role], role_layers[node_role]
                else:
                    if node_role not in roles:
                        self.report(join(node_path, "role"), unknown_role(node_role, roles))
                    values, layers = base, base_layers
                fields = apply_layer(values, node)
            if self.extra_layers:
                own = self.own_layers(Origin.NODE, node)
                self.add(node_name, node_role, fields, node_path, (*layers, *own))
            else:
                self.add(node_name, node_role, fields, node_path, (*layers, (Origin.NODE, node)))

        if self.problems:
            raise InventoryError(self.problems)
        return Inventory(
            path=path,
            nodes=dict(sorted(self.built.items())),
            roles=tuple(sorted(roles)),
            ssh_config=self.ssh_config,
            builders=self.builders,
            terraform_sources=() if self.terraform is None else tuple(self.terraform.sources),
        )

    def fan_out(
        self,
        role_name: str,
        role: Mapping[str, Any],
        values: Values,
        layers: tuple[Layer, ...],
        name_ok: bool,
    ) -> None:
        """The role's targets taken from Terraform outputs (`targets_from`), valid ones only."""
        assert self.terraform is not None
        used_by = join(join("roles", role_name), "targets_from")
        found = self.terraform.targets(role["targets_from"], used_by)
        for ref, where, target in found:
            fields = apply_layer(values, target)
            name: str = target.get("name") or fanout_name(role_name, fields["host"])
            if name_ok and "name" not in target:
                made = f"the node name made from role and host, {shown(name)},"
                if not is_name(name):
                    self.report(where, f"{made} is not a valid name: give the entries a name")
                    continue
                if peer_name_problem(name) is not None:
                    self.report(where, f"{made} is not one the peers can carry: {NO_LETTER}")
                    continue
            own: Layer = (TerraformOrigin(ref), target)
            self.add(name, role_name, fields, where, (*layers, own))

    def entries(self, field_name: str, tables: Mapping[str, Any]) -> Any:
        """The typed entries of one named-table field (valid by now), built once per table: the
        nodes of a role share the role's merged table, so its entries are built once for all."""
        cached = self.built_entries.get(id(tables))
        # The table is kept in the cache, so its id cannot be reused while the cache lives.
        if cached is not None and cached[0] is tables:
            return cached[1]
        # Imported here: an inventory without keys, data or checks never loads the entry types.
        from nixherd.inventory.parse_entries import BUILDERS

        build = BUILDERS[field_name]
        built = {name: build(name, table) for name, table in tables.items()}
        self.built_entries[id(tables)] = (tables, built)
        return built

    def check_name(self, check: Callable[[Any], Any], name: str, path: str) -> bool:
        found = check(name)
        if found is None:
            return True
        for _, message in found:
            self.report(path, message)
        return False

    def add(
        self,
        name: str,
        role: str | None,
        fields: Values,
        source: str,
        layers: tuple[Layer, ...],
    ) -> None:
        """Build a node from its merged fields, after the checks that span nodes: duplicate
        names, two nodes on one host and port."""
        first = self.sources.get(name)
        if first is not None:
            self.report(source, f"node name {shown(name)} is already used by {first}")
            return
        self.sources[name] = source
        if fields["host"] is None:
            fields["host"] = name
        # `false` (TOML has no null) resolves to None: not on ssh's command line, ssh decides.
        if fields["user"] is False:
            fields["user"] = None
        if fields["port"] is False:
            fields["port"] = None
        endpoint = (endpoint_host(fields["host"]), fields["port"])
        other = self.endpoints.get(endpoint)
        if other is not None:
            port = "(port from ssh)" if fields["port"] is None else f"port {fields['port']}"
            self.report(
                source, f"host {shown(fields['host'])} {port} is already used by node {other}"
            )
            return
        self.endpoints[endpoint] = name
        for f_name in _ENTRY_FIELDS:
            if fields[f_name]:
                fields[f_name] = self.entries(f_name, fields[f_name])
        clash = None
        if fields["keys"] or fields["data"]:
            clash = destination_clash(fields["keys"], fields["data"])
        if clash is not None:
            self.report(source, clash)
            return
        if fields["cache"]:
            unusable = incomplete(fields["cache"])
            if unusable is not None:
                self.report(source, unusable)
                return
        if self.problems:
            return  # nothing will be returned: only keep looking for problems
        fields["name"] = name
        fields["role"] = role
        fields["source"] = source
        fields["layers"] = layers
        fields["ssh_config"] = self.ssh_config
        self.built[name] = Node.from_fields(fields)


def unknown_role(name: str, roles: Mapping[str, Any]) -> str:
    if not roles:
        return f"unknown role {shown(name)} (no roles are defined)"
    import difflib

    close = difflib.get_close_matches(name, list(roles), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(sorted(roles)[:10])
    return f"unknown role {shown(name)} ({hint})"


def resolve(
    doc: Mapping[str, Any],
    *,
    file: str,
    path: Path,
    terraform_snapshot: Mapping[str, Any] | None = None,
) -> Inventory:
    """Validate and resolve a parsed inventory; raise InventoryError listing every problem.

    `file` names the inventory in messages; `path` is its absolute path (ssh_config is relative
    to its directory). Terraform outputs come from `terraform_snapshot` when given (the one
    `terraform sync` is about to write), else from the snapshot file beside the inventory.
    """
    return _Resolver(file, terraform_snapshot).run(doc, path)
