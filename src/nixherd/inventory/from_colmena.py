"""A Colmena hive's nodes (as `resources/colmena-import.nix` reports them) turned into an
inventory: nodes whose imports are the same files form a role (its fan-out targets when their
names are the ones `<role>-<host>` gives, else explicit nodes of the role), other nodes are
explicit nodes with their own modules; what an inventory cannot hold is listed, never dropped
silently.

Colmena's deployment options (nix-community/colmena `src/nix/hive/options.nix`,
`deploymentOptions`) map to the inventory as docs/nix-library.md's table says in the other
direction: targetHost -> host, targetUser -> user (null: `false`, ssh decides), targetPort -> port
(null: unset, ssh decides), tags -> tags, sshOptions (`-o K=V`, `-oK=V`, `-J X`, `-i X`) ->
ssh_options. Keys are listed by name only: a Colmena key's
`text` lives in the Nix expression, and nixherd's keys come from a file, a command or the
environment, never the store.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.inventory.fields import BY_NAME, check_node_name, check_role_name
from nixherd.inventory.normal import endpoint_host
from nixherd.inventory.tomltext import render_key, render_value
from nixherd.inventory.validate import join, key_segment, shown

_DEFAULT_ESCALATION = ["sudo", "-H", "--"]
_SSH_FLAG_OPTIONS = {"-J": "ProxyJump", "-i": "IdentityFile"}


@dataclass(frozen=True, slots=True)
class Imported:
    """The inventory's text and what could not be carried (one line each)."""

    text: str
    nodes: int
    roles: int
    not_carried: tuple[str, ...]


@dataclass
class _Node:
    name: str
    fields: dict[str, Any]
    modules: tuple[str, ...] | None  # None: an import that is no file under the flake


def _check(field: str, value: Any) -> str | None:
    """The validator's message for `value` in `field`, or None when valid."""
    issues = BY_NAME[field].check(value)
    if issues is None:
        return None
    return "; ".join(message for _, message in issues)


def _ssh_options(words: Sequence[str], lost: list[str], name: str) -> list[str]:
    options: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-o" and i + 1 < len(words):
            option, i = words[i + 1], i + 2
        elif word.startswith("-o") and len(word) > 2:
            option, i = word[2:], i + 1
        elif word in _SSH_FLAG_OPTIONS and i + 1 < len(words):
            option, i = f"{_SSH_FLAG_OPTIONS[word]}={words[i + 1]}", i + 2
        else:
            lost.append(f"{name}: deployment.sshOptions word {shown(word)} (no ssh_options form)")
            i += 1
            continue
        option = option.replace(" ", "=", 1) if "=" not in option else option
        problem = _check("ssh_options", [option])
        if problem is None:
            options.append(option)
        else:
            lost.append(f"{name}: deployment.sshOptions {shown(option)}: {problem}")
    return options


def _relative(imports: Sequence[Mapping[str, Any]], root: str) -> tuple[str, ...] | None:
    prefix = root.rstrip("/") + "/"
    found: list[str] = []
    for entry in imports:
        file = entry.get("file")
        if not isinstance(file, str) or not file.startswith(prefix):
            return None
        found.append(file[len(prefix) :])
    return tuple(found)


def _node(name: str, data: Mapping[str, Any], root: str, lost: list[str]) -> _Node | None:
    """One node's inventory fields, or None (and why, in `lost`) when it cannot be carried."""
    if "error" in data:
        lost.append(f"{key_segment(name)}: not imported: {data['error']}")
        return None
    bad_name = check_node_name(name)
    if bad_name is not None:
        lost.append(f"{key_segment(name)}: not imported: {bad_name[0][1]}")
        return None
    host = data.get("targetHost")
    if host is None:
        lost.append(f"{name}: not imported: targetHost is null (Colmena deploys it locally only)")
        return None
    problem = _check("host", host)
    if problem is not None:
        lost.append(f"{name}: not imported: targetHost: {problem}")
        return None
    fields: dict[str, Any] = {"host": host}
    user = data.get("targetUser")
    if user is None:
        fields["user"] = False  # Colmena's null and the inventory's false: ssh decides
    elif user != "root":
        problem = _check("user", user)
        if problem is None:
            fields["user"] = user
        else:
            lost.append(f"{name}: targetUser: {problem}")
    port = data.get("targetPort")
    # Colmena's null port is the inventory's unset one: ssh decides (its config, else 22).
    if port is not None:
        problem = _check("port", port)
        if problem is None:
            fields["port"] = port
        else:
            lost.append(f"{name}: targetPort: {problem}")
    tags = []
    for tag in data.get("tags", ()):
        problem = _check("tags", [tag])
        if problem is None:
            tags.append(tag)
        else:
            lost.append(f"{name}: tag {shown(tag)}: {problem}")
    if tags:
        fields["tags"] = tags
    ssh_options = _ssh_options(data.get("sshOptions", ()), lost, name)
    if ssh_options:
        fields["ssh_options"] = ssh_options
    own = data.get("own") or {}
    if own.get("data"):
        problem = _check("config", own["data"])
        if problem is None:
            fields["config"] = own["data"]
        else:
            lost.append(f"{name}: its own settings: {problem}")
    for option in own.get("skipped", ()):
        lost.append(
            f"{name}: its own setting {shown(option)} is no plain data (mkIf, a package, a "
            "function): move it into a module"
        )
    _lost_deployment(name, data, lost)
    modules = _relative(data.get("imports", ()), root)
    if modules is None:
        lost.append(
            f"{name}: an import that is no file of the flake (an inline module or a path "
            "outside it): put it in a file and add it to `modules`"
        )
    return _Node(name, fields, modules)


def _lost_deployment(name: str, data: Mapping[str, Any], lost: list[str]) -> None:
    for key in data.get("keys", ()):
        lost.append(
            f"{name}: {join('deployment.keys', key)}: add it as a key of the node with its "
            "source (file, command or env)"
        )
    if data.get("buildOnTarget"):
        lost.append(f"{name}: deployment.buildOnTarget: use `nixherd apply --build-on-target`")
    if data.get("allowLocalDeployment"):
        lost.append(f"{name}: deployment.allowLocalDeployment (nixherd deploys over ssh only)")
    if data.get("replaceUnknownProfiles") is False:
        lost.append(f"{name}: deployment.replaceUnknownProfiles = false")
    escalation = data.get("privilegeEscalationCommand", _DEFAULT_ESCALATION)
    if list(escalation) != _DEFAULT_ESCALATION:
        lost.append(f"{name}: deployment.privilegeEscalationCommand (nixherd uses sudo)")
    for other in data.get("other", ()):
        lost.append(f"{name}: {join('deployment', other)} (unknown to nixherd)")
    if data.get("nodeNixpkgs"):
        lost.append(f"{name}: meta.nodeNixpkgs (a nixpkgs of its own): set its `system`")
    for arg in data.get("nodeSpecialArgs", ()):
        lost.append(f"{name}: {join('meta.nodeSpecialArgs', arg)}: make it a var (node.vars)")


def _common_prefix(lists: Iterable[Sequence[Any]]) -> list[Any]:
    lists = list(lists)
    prefix: list[Any] = []
    for values in zip(*lists, strict=False):
        if all(v == values[0] for v in values):
            prefix.append(values[0])
        else:
            break
    return prefix if lists and all(len(x) >= len(prefix) for x in lists) else []


def _fanout_prefix(node: _Node) -> str | None:
    """The role a fan-out of `node`'s host would need to give `node` its name, if any."""
    suffix = "-" + node.fields["host"].replace(".", "-").replace(":", "-")
    if node.name.endswith(suffix) and len(node.name) > len(suffix):
        return node.name[: -len(suffix)]
    return None


def _role_name(modules: Sequence[str], taken: set[str]) -> str:
    path = modules[0].rstrip("/")
    base = path.rsplit("/", 1)[-1]
    if base in ("default.nix", "") and "/" in path:
        base = path.rsplit("/", 2)[-2]
    base = re.sub(r"\.nix$", "", base)
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base).lstrip("-_.") or "role"
    name, n = base[:60], 2
    while name in taken or check_role_name(name) is not None:
        name = f"{base[:56]}-{n}"
        n += 1
    return name


@dataclass
class _Role:
    name: str
    fields: dict[str, Any]
    targets: list[dict[str, Any]]


def convert(hive: Mapping[str, Any], *, origin: str) -> Imported:
    """The inventory for a hive as `colmena-import.nix` reports it (`origin` names the flake in
    the file's header)."""
    lost: list[str] = []
    root = str(hive["root"])
    meta = hive.get("meta", {})
    if meta.get("nixpkgs"):
        lost.append("meta.nixpkgs: pass `nixpkgs` to mkFleet (docs/nix-library.md)")
    for arg in meta.get("specialArgs", ()):
        lost.append(f"{join('meta.specialArgs', arg)}: pass it in mkFleet's `specialArgs`")
    for other in meta.get("other", ()):
        lost.append(f"{join('meta', other)} (unknown to nixherd)")
    defaults: dict[str, Any] = {}
    defaults_modules = _relative(meta.get("defaultsImports", ()), root)
    if defaults_modules is None:
        lost.append("defaults: an import that is no file of the flake")
    elif defaults_modules:
        defaults["modules"] = list(defaults_modules)
    nodes: list[_Node] = []
    endpoints: dict[tuple[str, int | None], str] = {}
    for name in sorted(hive["nodes"]):
        node = _node(name, hive["nodes"][name], root, lost)
        if node is None:
            continue
        endpoint = (endpoint_host(node.fields["host"]), node.fields.get("port"))
        if endpoint in endpoints:
            lost.append(f"{name}: not imported: same host and port as {endpoints[endpoint]}")
            continue
        endpoints[endpoint] = name
        nodes.append(node)
    roles, explicit = _group(nodes)
    text = _render(defaults, roles, explicit, lost, origin, str(hive.get("source", "colmena")))
    return Imported(text, len(nodes), len(roles), tuple(lost))


def _group(nodes: Sequence[_Node]) -> tuple[list[_Role], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[_Node]] = {}
    for node in nodes:
        if node.modules:
            groups.setdefault(node.modules, []).append(node)
    taken: set[str] = set()
    roles: list[_Role] = []
    in_role: dict[str, tuple[_Role, bool]] = {}  # node name -> (its role, a target)
    for modules, members in groups.items():
        # The fan-out shape most members have (`<role>-<host>`): those become the targets.
        counted = Counter(p for p in map(_fanout_prefix, members) if p is not None)
        prefix = counted.most_common(1)[0][0] if counted else None
        if len(members) < 2 and prefix is None:
            continue
        if prefix is not None and prefix not in taken and check_role_name(prefix) is None:
            name = prefix
        else:
            name, prefix = _role_name(modules, taken), None
        taken.add(name)
        fields: dict[str, Any] = {"modules": list(modules)}
        if len(members) > 1:
            tags = _common_prefix(m.fields.get("tags", []) for m in members)
            if tags:
                fields["tags"] = tags
                for m in members:
                    rest = m.fields["tags"][len(tags) :]
                    if rest:
                        m.fields["tags"] = rest
                    else:
                        del m.fields["tags"]
            # A user or port every member shares is the role's.
            for key in ("user", "port"):
                values = [m.fields.get(key) for m in members]
                if values[0] is not None and all(v == values[0] for v in values):
                    fields[key] = values[0]
                    for m in members:
                        del m.fields[key]
        role = _Role(name, fields, [])
        roles.append(role)
        for m in members:
            in_role[m.name] = (role, prefix is not None and _fanout_prefix(m) == prefix)
    explicit: list[dict[str, Any]] = []
    for node in nodes:
        role_of = in_role.get(node.name)
        if role_of is not None and role_of[1]:
            role_of[0].targets.append(node.fields)
            continue
        table: dict[str, Any] = {"name": node.name}
        if role_of is not None:
            table["role"] = role_of[0].name
        elif node.modules:
            table["modules"] = list(node.modules)
        if node.fields["host"] != node.name:
            table["host"] = node.fields["host"]
        table.update({k: v for k, v in node.fields.items() if k != "host"})
        explicit.append(table)
    return roles, explicit


def _comment(text: str) -> str:
    # A name or value from the hive may hold anything: nothing of it may end the comment line.
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)


def _render(
    defaults: Mapping[str, Any],
    roles: Sequence[_Role],
    explicit: Sequence[Mapping[str, Any]],
    lost: Sequence[str],
    origin: str,
    source: str,
) -> str:
    out = [f"# Imported from the Colmena hive `{source}` of {_comment(origin)} by\n"]
    out.append("# `nixherd import colmena`.\n")
    if lost:
        out.append("# Not carried (set these up by hand):\n")
        out += [f"#   - {_comment(line)}\n" for line in lost]
    else:
        out.append("# Everything was carried.\n")
    if defaults:
        out.append("\n[defaults]\n")
        out += [f"{render_key(k)} = {render_value(v)}\n" for k, v in defaults.items()]
    for role in roles:
        out.append(f"\n[roles.{render_key(role.name)}]\n")
        out += [f"{render_key(k)} = {render_value(v)}\n" for k, v in role.fields.items()]
        if role.targets:
            out.append("targets = [\n")
            out += [f"  {render_value(t)},\n" for t in role.targets]
            out.append("]\n")
    for table in explicit:
        out.append(f"\n[nodes.{render_key(table['name'])}]\n")
        out += [f"{render_key(k)} = {render_value(v)}\n" for k, v in table.items() if k != "name"]
    return "".join(out)
