"""Fan-out and merge: from a parsed inventory document to validated, resolved nodes, with the
origin of every value (computed lazily: only `show` asks for it).

Resolution is docs/inventory.md's one rule: built-in default < [defaults] < [roles.<role>] < the
node (a fan-out target or an explicit node). Every problem is collected before anything is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
from nixherd.inventory.model import Inventory, Layer, Node, Origin
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
    def __init__(self, file: str) -> None:
        self.file = file
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
        for key in doc:
            if key not in TOP_LEVEL:
                self.report(join("", key), unknown_field_message(key, TOP_LEVEL))

        defaults = self.table(doc.get("defaults", {}), "defaults") or {}
        defaults = self.layer(defaults, DEFAULTS_TABLE, "defaults")
        base = apply_layer(_SKELETON, defaults)
        base_layers: tuple[Layer, ...] = ((Origin.DEFAULTS, defaults),) if defaults else ()
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
            layers = role_layers[role_name] = (*base_layers, (Origin.ROLE, role))
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
                self.add(name, role_name, fields, target_path, (*layers, (Origin.TARGET, target)))

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
            self.add(node_name, node_role, fields, node_path, (*layers, (Origin.NODE, node)))

        if self.problems:
            raise InventoryError(self.problems)
        return Inventory(
            path=path,
            nodes=dict(sorted(self.built.items())),
            roles=tuple(sorted(roles)),
            ssh_config=self.ssh_config,
            builders=self.builders,
        )

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


def resolve(doc: Mapping[str, Any], *, file: str, path: Path) -> Inventory:
    """Validate and resolve a parsed inventory; raise InventoryError listing every problem.

    `file` names the inventory in messages; `path` is its absolute path (ssh_config is relative
    to its directory).
    """
    return _Resolver(file).run(doc, path)
