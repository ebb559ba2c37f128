"""The inventory schema, declared once: every field, its type, merge rule, where it may appear
and its validator. Validation, error messages and the field reference (`reference()`) all read it.

Adding a per-layer field is one `Field(...)` entry below (plus the attribute on `model.Node`); a
validator is any `Check`, usually built from the combinators here (`string`, `list_of`, `record`,
`named_table`, ...).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, Flag
from typing import Any, Final

# A validator returns None when the value is fine (the fast path: no allocation), otherwise the
# issues found, each a key-path suffix relative to the value (".a.b", "[2]" or "") and a message.
Issue = tuple[str, str]
Check = Callable[[Any], "list[Issue] | None"]


class Where(Flag):
    """The tables of an inventory a field may appear in."""

    DEFAULTS = 1
    ROLE = 2
    TARGET = 4
    NODE = 8


NOWHERE: Final = Where(0)
EVERY_LAYER: Final = Where.DEFAULTS | Where.ROLE | Where.TARGET | Where.NODE

WHERE_NAMES: Final[dict[Where, str]] = {
    Where.DEFAULTS: "[defaults]",
    Where.ROLE: "[roles.<role>]",
    Where.TARGET: "[[roles.<role>.targets]]",
    Where.NODE: "[nodes.<name>]",
}


class Merge(Enum):
    """How the value of a later layer combines with the earlier ones."""

    REPLACE = "later wins"
    UNION = "concatenated, duplicates dropped"
    DEEP = "deep-merged"
    NAMED = "by name: a later entry replaces an earlier one of the same name"
    NONE = "not merged (describes the table it is in)"


class NodeName:
    """The built-in default of `host`: the node's own name."""

    def __repr__(self) -> str:
        return "the node's name"


NODE_NAME: Final = NodeName()


@dataclass(frozen=True, slots=True)
class Field:
    """One key of the inventory: what it holds, where it may appear, how layers combine it."""

    name: str
    type: str
    check: Check
    merge: Merge
    where: Where
    doc: str
    default: Any = None
    required: Where = NOWHERE  # the tables where it must be given
    # Part of the resolved node Nix sees (`to_data()`, `nixherd.nodes`); False for the
    # deployer-side tables (keys, data) that are delivered without a rebuild.
    nix: bool = True

    @property
    def is_node_field(self) -> bool:
        """A field that every resolved node carries (as opposed to one describing its table)."""
        return self.merge is not Merge.NONE


# --- limits ---------------------------------------------------------------------------------------

MAX_NAME = 63
MAX_HOST = 253
MAX_USER = 32
MAX_DEPTH = 32  # nesting inside vars/config/named tables
# Attribute names Nix gives a meaning of its own: a set with `outPath` is printed as that string,
# `__toString` and `__functor` make it a string or a function. The resolved node would not read
# back as the data the inventory holds.
KEY_DIR = "/run/keys"  # where a key goes on the node when its `dest` is not given
NIX_SPECIAL_KEYS = frozenset({"outPath", "__toString", "__functor"})
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1  # Nix integers are 64-bit; fromTOML silently clamps anything larger
MAX_SHOWN = 48  # characters of a bad value quoted back in an error message

NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"
USER_PATTERN = "[A-Za-z_][A-Za-z0-9_.-]*"
SYSTEM_PATTERN = "[a-z0-9_]+-[a-z0-9_]+"

_NAME = re.compile(NAME_PATTERN).fullmatch
_USER = re.compile(USER_PATTERN).fullmatch
_SYSTEM = re.compile(SYSTEM_PATTERN).fullmatch
# Hostnames and IPv4 addresses: dot-separated labels, the first one never starting with `-` (the
# value becomes ssh argv). IPv6 addresses are recognised apart (they contain `:`).
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?").fullmatch
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?").fullmatch
_SSH_OPTION = re.compile(r"([A-Za-z]+)=[^\s\x00]*").fullmatch
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+").fullmatch

# ssh options `ssh_options` may not set (lower-case, as ssh compares them), with the reason shown.
# ssh.py refuses them too, at the argv boundary; refusing them here reports them before any work.
# - Host keys: nixherd passes StrictHostKeyChecking itself (`host_key_policy`); the others would
#   replace or redirect the pinning against known_hosts (another file, a command, DNS, the key of
#   another host). A deliberate setup can still say so in the `ssh_config` file.
# - Multiplexing: nixherd runs one ControlMaster per node, in a directory it removes even when
#   killed; another path or persistence would leave a master behind.
# - Local commands: run through the deployer's shell (ProxyJump needs none).
_HOST_KEYS = "nixherd always verifies host keys"
_MULTIPLEXING = "nixherd runs its own ControlMaster (and stops it, even when killed)"
_LOCAL_COMMAND = "it runs a local command through a shell (use ProxyJump, or the ssh_config)"
FORBIDDEN_SSH_OPTIONS: Final[Mapping[str, str]] = {
    "stricthostkeychecking": _HOST_KEYS,
    "userknownhostsfile": _HOST_KEYS,
    "globalknownhostsfile": _HOST_KEYS,
    "knownhostscommand": _HOST_KEYS,
    "verifyhostkeydns": _HOST_KEYS,
    "hostkeyalias": _HOST_KEYS,
    "controlmaster": _MULTIPLEXING,
    "controlpath": _MULTIPLEXING,
    "controlpersist": _MULTIPLEXING,
    "localcommand": _LOCAL_COMMAND,
    "permitlocalcommand": _LOCAL_COMMAND,
    "proxycommand": _LOCAL_COMMAND,
}
# `host_key_policy` values and the StrictHostKeyChecking each one passes (never `no`).
HOST_KEY_POLICIES: Final[Mapping[str, str]] = {"strict": "yes", "accept-new": "accept-new"}


# --- messages -------------------------------------------------------------------------------------


def type_name(value: object) -> str:
    """The TOML name of a parsed value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    name = type(value).__name__
    return {"datetime": "date-time", "date": "date", "time": "time"}.get(name, name)


def shown(value: object) -> str:
    """A value quoted back to the user: escaped (no control or invisible characters) and short."""
    if isinstance(value, str):
        if len(value) > MAX_SHOWN:
            return json.dumps(value[:MAX_SHOWN])[:-1] + '..."'
        return json.dumps(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        # Python refuses to print integers of thousands of digits; nobody wants to read them.
        text = repr(value) if value.bit_length() <= 128 else f"<{value.bit_length()}-bit integer>"
    elif isinstance(value, float):
        text = repr(value)
    else:
        return type_name(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def got(value: object) -> str:
    """`got <type> <value>` for a value of the wrong type."""
    if isinstance(value, list | dict):
        return f"got {type_name(value)}"
    return f"got {type_name(value)} {shown(value)}"


def key_segment(key: str) -> str:
    """A key as it appears in a key path: bare when TOML allows it, quoted otherwise; a key too
    long to read is cut (quoted, ending in ...) so that no message line grows without bound."""
    if len(key) <= MAX_SHOWN and _BARE_KEY(key):
        return key
    return shown(key)


def join(path: str, key: str) -> str:
    segment = key_segment(key)
    return f"{path}.{segment}" if path else segment


def describe(where: Where) -> str:
    return ", ".join(name for flag, name in WHERE_NAMES.items() if flag in where)


def _one(message: str) -> list[Issue]:
    return [("", message)]


# --- validators -----------------------------------------------------------------------------------


def string(
    matches: Callable[[str], object], expected: str, max_len: int, *, what: str = "a string"
) -> Check:
    """A string that `matches` accepts and at most `max_len` characters long."""

    def check(value: Any) -> list[Issue] | None:
        if type(value) is str and len(value) <= max_len and matches(value):
            return None
        if not isinstance(value, str):
            return _one(f"must be {what}, {got(value)}")
        if len(value) > max_len:
            return _one(f"must be at most {max_len} characters, got {len(value)}")
        return _one(f"must be {expected}, got {shown(value)}")

    return check


def name_check(what: str = "a name") -> Check:
    return string(
        _NAME,
        f"{what} matching {NAME_PATTERN} (at most {MAX_NAME} characters)",
        MAX_NAME,
    )


def is_host(value: str) -> bool:
    """Whether a string is a valid `host` (hostname, IPv4 or IPv6 address; never `-` first)."""
    return _host(value) is None


def _host_ok(value: str) -> bool:
    if ":" not in value:
        return _HOSTNAME(value) is not None
    if _IPV6(value) is None:
        return False
    import ipaddress  # only IPv6 hosts pay for it

    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def integer(low: int, high: int) -> Check:
    def check(value: Any) -> list[Issue] | None:
        if type(value) is int and low <= value <= high:
            return None
        if type(value) is not int:
            return _one(f"must be an integer, {got(value)}")
        return _one(f"must be {low}..{high}, got {shown(value)}")

    return check


def list_of(item: Check) -> Check:
    """An array whose every element passes `item`; each bad element is reported."""

    def check(value: Any) -> list[Issue] | None:
        if type(value) is not list:
            return _one(f"must be an array, {got(value)}")
        for element in value:
            if item(element) is not None:
                break
        else:
            return None
        issues: list[Issue] | None = None
        for index, element in enumerate(value):
            bad = item(element)
            if bad is not None:
                if issues is None:
                    issues = []
                issues.extend((f"[{index}]{suffix}", message) for suffix, message in bad)
        return issues

    return check


def list_of_names(what: str) -> Check:
    """An array of names (tags); the usual valid array is checked without a call per element."""
    slow = list_of(name_check(what))

    def check(value: Any) -> list[Issue] | None:
        if type(value) is list:
            for element in value:
                if type(element) is not str or len(element) > MAX_NAME or _NAME(element) is None:
                    break
            else:
                return None
        return slow(value)

    return check


def _value_issues(value: Any, depth: int, issues: list[Issue], suffix: str) -> None:
    """Collect what Nix's `builtins.fromTOML` could not represent faithfully."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            issues.append((suffix, "strings may not contain NUL (Nix would cut them short)"))
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            issues.append((suffix, f"integer out of the 64-bit range, got {shown(value)}"))
    elif kind is float:
        if not math.isfinite(value):
            issues.append((suffix, f"must be a finite number, got {shown(value)}"))
    elif kind is bool:
        pass
    elif kind is dict or kind is list:
        if depth >= MAX_DEPTH:
            issues.append((suffix, f"nested deeper than {MAX_DEPTH} levels"))
            return
        if kind is dict:
            for key, element in value.items():
                sub = f"{suffix}.{key_segment(key)}"
                if "\x00" in key:
                    issues.append((sub, "keys may not contain NUL"))
                elif key in NIX_SPECIAL_KEYS:
                    issues.append((sub, f"{key!r} is a key Nix treats specially: rename it"))
                _value_issues(element, depth + 1, issues, sub)
        else:
            for index, element in enumerate(value):
                _value_issues(element, depth + 1, issues, f"{suffix}[{index}]")
    else:
        issues.append(
            (suffix, f"{type_name(value)} values are not supported (Nix cannot read them)")
        )


def any_table(value: Any) -> list[Issue] | None:
    """A table of any TOML values that Nix reads back identically."""
    if type(value) is not dict:
        return _one(f"must be a table, {got(value)}")
    # The fast path for the usual flat table of strings, integers and booleans.
    for key, element in value.items():
        kind = type(element)
        if "\x00" in key or key in NIX_SPECIAL_KEYS:
            break
        if kind is str:
            if "\x00" in element:
                break
        elif kind is int:
            if not INT_MIN <= element <= INT_MAX:
                break
        elif kind is not bool:
            break
    else:
        return None
    issues: list[Issue] = []
    _value_issues(value, 1, issues, "")
    return issues or None


def record(fields: Mapping[str, Check], required: Sequence[str] = ()) -> Check:
    """A table with a fixed set of keys, each with its own validator (entries of named tables)."""

    def check(value: Any) -> list[Issue] | None:
        if type(value) is not dict:
            return _one(f"must be a table, {got(value)}")
        issues: list[Issue] = []
        for key, element in value.items():
            sub = "." + key_segment(key)
            field_check = fields.get(key)
            if field_check is None:
                issues.append((sub, unknown_field_message(key, fields)))
                continue
            bad = field_check(element)
            if bad is not None:
                issues.extend((sub + suffix, message) for suffix, message in bad)
        issues.extend(("", f"{key} is required") for key in required if key not in value)
        return issues or None

    return check


def named_table(entry: Check) -> Check:
    """A table of named entries (`[nodes.x.keys.<name>]`), each entry checked by `entry`."""
    check_name = name_check("an entry name")

    def check(value: Any) -> list[Issue] | None:
        if type(value) is not dict:
            return _one(f"must be a table, {got(value)}")
        issues: list[Issue] = []
        for name, element in value.items():
            sub = "." + key_segment(name)
            bad_name = check_name(name)
            if bad_name is not None:
                issues.extend((sub, message) for _, message in bad_name)
            bad = entry(element)
            if bad is not None:
                issues.extend((sub + suffix, message) for suffix, message in bad)
        return issues or None

    return check


def unknown_field_message(key: str, known: Mapping[str, object] | Sequence[str]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


# --- the fields -----------------------------------------------------------------------------------


def _host(value: Any) -> list[Issue] | None:
    if type(value) is str and len(value) <= MAX_HOST:
        # A hostname or IPv4 address, the usual case, without a further call.
        if ":" not in value and _HOSTNAME(value) is not None:
            return None
        if _host_ok(value):
            return None
    if not isinstance(value, str):
        return _one(f"must be a string, {got(value)}")
    if len(value) > MAX_HOST:
        return _one(f"must be at most {MAX_HOST} characters, got {len(value)}")
    return _one(f"must be a hostname, an IPv4 or an IPv6 address, got {shown(value)}")


def _module(value: Any) -> list[Issue] | None:
    if type(value) is str and value and "\x00" not in value and "\n" not in value:
        return None
    if not isinstance(value, str):
        return _one(f"must be a string, {got(value)}")
    return _one(f"must be a non-empty path without NUL or newline, got {shown(value)}")


def _ssh_option(value: Any) -> list[Issue] | None:
    if type(value) is not str:
        return _one(f"must be a string, {got(value)}")
    match = _SSH_OPTION(value)
    if match is None:
        return _one(f"must be Key=Value (Key letters only, no whitespace), got {shown(value)}")
    reason = FORBIDDEN_SSH_OPTIONS.get(match.group(1).lower())
    if reason is not None:
        return _one(f"{match.group(1)} may not be set: {reason}")
    return None


def _ssh_config(value: Any) -> list[Issue] | None:
    if type(value) is str and value and not re.search(r"[\s\x00]", value):
        return None
    if not isinstance(value, str):
        return _one(f"must be a string, {got(value)}")
    # nix splits NIX_SSHOPTS on whitespace: such a path could not be handed on.
    return _one(f"must be a path without whitespace, got {shown(value)}")


def _targets(value: Any) -> list[Issue] | None:
    # The entries themselves are checked as TARGET tables by the resolver, which needs them anyway.
    if type(value) is list and all(type(entry) is dict for entry in value):
        return None
    return _one(f"must be an array of tables ([[roles.<role>.targets]]), {got(value)}")


# --- keys and data: deployer-side tables (nixherd.node.keys, nixherd.node.data) ---------------
# Never part of the Nix data: editing them must never change an evaluation or a build, and a
# key's source (a path, a sops command) has no business in a NixOS module.

MAX_PATH = 4096
KEY_SOURCES: Final = ("file", "command", "env")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").fullmatch
# A login or group name (a trailing $ for machine accounts), or a numeric id.
_OWNER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]{1,10}").fullmatch
_MODE = re.compile(r"0?[0-7]{3}").fullmatch
_CONTROL = re.compile(r"[\x00\n]").search


def _absolute_path(value: Any) -> list[Issue] | None:
    if (
        type(value) is str
        and value.startswith("/")
        and not value.endswith("/")
        and len(value) <= MAX_PATH
        and not _CONTROL(value)
        and not value.endswith(("/.", "/.."))
    ):
        return None
    if not isinstance(value, str):
        return _one(f"must be a string, {got(value)}")
    if value.startswith("/") and value.endswith(("/.", "/..")) and not _CONTROL(value):
        # A directory, not a file: writing it could only fail on the node, in the middle of a run.
        last = value.rpartition("/")[2]
        return _one(f"must name a file, not a directory (it ends in /{last}), got {shown(value)}")
    return _one(f"must be an absolute file path without NUL or newline, got {shown(value)}")


def _source_path(value: Any) -> list[Issue] | None:
    if type(value) is str and value and len(value) <= MAX_PATH and not _CONTROL(value):
        return None
    if not isinstance(value, str):
        return _one(f"must be a string, {got(value)}")
    return _one(f"must be a non-empty path without NUL or newline, got {shown(value)}")


def _argv(value: Any) -> list[Issue] | None:
    if type(value) is not list or not value:
        return _one(f"must be a non-empty array of strings (an argv), {got(value)}")
    issues: list[Issue] = []
    for index, word in enumerate(value):
        if type(word) is not str:
            issues.append((f"[{index}]", f"must be a string, {got(word)}"))
        elif "\x00" in word or (index == 0 and not word):
            issues.append((f"[{index}]", f"must be a string without NUL, got {shown(word)}"))
    return issues or None


def _choice(*choices: str) -> Check:
    expected = " or ".join(json.dumps(c) for c in choices)

    def check(value: Any) -> list[Issue] | None:
        if type(value) is str and value in choices:
            return None
        return _one(f"must be {expected}, {got(value)}")

    return check


def _var_path(value: Any) -> list[Issue] | None:
    from nixherd.inventory import template  # a light module (only `re`)

    if type(value) is not str:
        return _one(f"must be a string, {got(value)}")
    try:
        template.var_path(value)
    except ValueError:
        return _one(
            f"must be a dotted var path like a.b (letters, digits, _, -), got {shown(value)}"
        )
    return None


def _template(value: Any) -> list[Issue] | None:
    from nixherd.inventory import template

    if type(value) is not str:
        return _one(f"must be a string, {got(value)}")
    try:
        template.check(value)
    except ValueError as exc:
        return _one(str(exc))
    return None


_owner = string(_OWNER, "a user or group name, or a numeric id", MAX_USER)
_mode = string(_MODE, 'an octal mode string like "0400"', 4)

_key_entry = record(
    {
        "file": _source_path,
        "command": _argv,
        "env": string(_ENV_NAME, "an environment variable name", 255),
        "dest": _absolute_path,
        "user": _owner,
        "group": _owner,
        "mode": _mode,
        "upload": _choice("pre-activation", "post-activation"),
    }
)


def _key(value: Any) -> list[Issue] | None:
    """One key: exactly one source (file, command or env); a later layer replaces it whole."""
    issues = _key_entry(value)
    if type(value) is dict:
        given = [k for k in KEY_SOURCES if k in value]
        if len(given) != 1:
            got_ = f" (got {' and '.join(given)})" if given else ""
            issues = [
                *(issues or []),
                ("", f"needs exactly one source: file, command or env{got_}"),
            ]
    return issues


_data_entry = record(
    {
        "path": _absolute_path,
        "format": _choice("json", "toml", "text"),
        "source": _var_path,
        "template": _template,
        "mode": _mode,
        "user": _owner,
        "group": _owner,
        "reload": _argv,
    },
    required=("path",),
)


def _data(value: Any) -> list[Issue] | None:
    """One data file: json/toml render `source` (or all vars), text renders `template`."""
    issues = _data_entry(value)
    if type(value) is dict:
        text = value.get("format", "json") == "text"
        extra: list[Issue] = []
        if text and "template" not in value:
            extra.append(("", 'format = "text" needs a template'))
        if text and "source" in value:
            extra.append((".source", 'only for format "json" or "toml" (text uses template)'))
        if not text and "template" in value:
            extra.append((".template", 'only for format = "text"'))
        if extra:
            issues = [*(issues or []), *extra]
    return issues


def _health_check(value: Any) -> list[Issue] | None:
    """One `checks.<name>` entry; the check kinds are declared with the checks themselves."""
    from nixherd.node.checks import validate  # loaded only for inventories that have checks

    return validate(value)


NODE_LAYERS: Final = Where.TARGET | Where.NODE

FIELDS: tuple[Field, ...] = (
    Field(
        "host",
        "string (hostname, IPv4 or IPv6 address)",
        _host,
        Merge.REPLACE,
        NODE_LAYERS,
        "where ssh connects to",
        default=NODE_NAME,
        required=Where.TARGET,
    ),
    Field(
        "user",
        "string (login name)",
        string(_USER, f"a login name matching {USER_PATTERN}", MAX_USER),
        Merge.REPLACE,
        EVERY_LAYER,
        "the ssh login; a user other than root runs activation through sudo",
        default="root",
    ),
    Field(
        "port",
        "integer 1..65535",
        integer(1, 65535),
        Merge.REPLACE,
        EVERY_LAYER,
        "the ssh port",
        default=22,
    ),
    Field(
        "system",
        "string like x86_64-linux",
        string(_SYSTEM, f"a system like x86_64-linux ({SYSTEM_PATTERN})", MAX_NAME),
        Merge.REPLACE,
        EVERY_LAYER,
        "the platform the node's system is built for",
        default="x86_64-linux",
    ),
    Field(
        "tags",
        "array of names",
        list_of_names("a tag"),
        Merge.UNION,
        EVERY_LAYER,
        "labels for selection (`--on @tag`)",
        default=(),
    ),
    Field(
        "modules",
        "array of paths (relative to the flake root)",
        list_of(_module),
        Merge.UNION,
        EVERY_LAYER,
        "NixOS modules imported by the node's system",
        default=(),
    ),
    Field(
        "vars",
        "table (any TOML values)",
        any_table,
        Merge.DEEP,
        EVERY_LAYER,
        "free-form variables, given to modules as `node.vars`",
        default={},
    ),
    Field(
        "config",
        "table (NixOS option values)",
        any_table,
        Merge.DEEP,
        EVERY_LAYER,
        "inline NixOS option values (an attribute-set module)",
        default={},
    ),
    Field(
        "ssh_options",
        "array of Key=Value strings",
        list_of(_ssh_option),
        Merge.UNION,
        EVERY_LAYER,
        "extra `-o Key=Value` options for every ssh call to the node",
        default=(),
    ),
    Field(
        "host_key_policy",
        'string: "strict" or "accept-new"',
        _choice(*HOST_KEY_POLICIES),
        Merge.REPLACE,
        EVERY_LAYER,
        "strict: the node's host key must already be known; accept-new: an unknown host's key is "
        "recorded on first contact (a changed key is still refused)",
        default="strict",
    ),
    Field(
        "keys",
        "table of named keys (`keys.<name>`: file|command|env, dest, user, group, mode, upload)",
        named_table(_key),
        Merge.NAMED,
        EVERY_LAYER,
        "secrets uploaded over ssh without a rebuild, never via a Nix store (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field(
        "data",
        "table of named files (`data.<name>`: path, format, source|template, mode, owner, reload)",
        named_table(_data),
        Merge.NAMED,
        EVERY_LAYER,
        "runtime data files rendered from vars and pushed without a rebuild (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field(
        "checks",
        "table of named health checks (`checks.<name>`: command|http|tcp, status, body, "
        "timeout, retries, interval)",
        named_table(_health_check),
        Merge.NAMED,
        EVERY_LAYER,
        "health checks run after activation, before the confirmation (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field(
        "ssh_config",
        "string (path relative to the inventory's directory)",
        _ssh_config,
        Merge.NONE,
        Where.DEFAULTS,
        "an ssh config file used by every ssh and nix copy call",
    ),
    Field(
        "targets",
        "array of tables",
        _targets,
        Merge.NONE,
        Where.ROLE,
        "fan-out: each entry becomes a node playing the role",
    ),
    Field(
        "name",
        "string (node name)",
        name_check("a node name"),
        Merge.NONE,
        Where.TARGET,
        "the node's name (default: <role>-<host> with . and : turned into -)",
    ),
    Field(
        "role",
        "string (role name)",
        name_check("a role name"),
        Merge.NONE,
        Where.NODE,
        "the role the node plays (optional: a node without a role has only its own modules)",
    ),
)

BY_NAME: Final[dict[str, Field]] = {f.name: f for f in FIELDS}
NODE_FIELDS: Final[tuple[Field, ...]] = tuple(f for f in FIELDS if f.is_node_field)
NIX_FIELDS: Final[tuple[Field, ...]] = tuple(f for f in NODE_FIELDS if f.nix)
TOP_LEVEL: Final = ("defaults", "roles", "nodes")

# Per table kind, the fields allowed there.
ALLOWED: Final[dict[Where, dict[str, Field]]] = {
    where: {f.name: f for f in FIELDS if where in f.where} for where in WHERE_NAMES
}


def is_name(value: str) -> bool:
    """Whether a string is a valid node, role or tag name (the quick yes/no, no message)."""
    return len(value) <= MAX_NAME and _NAME(value) is not None


check_node_name: Final = name_check("a node name")
check_role_name: Final = name_check("a role name")


_NO_PROBLEMS: Final[list[tuple[str, str]]] = []  # shared, never mutated: returned when valid


@dataclass(frozen=True, slots=True)
class TableSchema:
    """The keys one kind of table may hold, with their validators (built once from FIELDS)."""

    where: Where
    checks: Mapping[str, Check]
    required: tuple[str, ...]

    @classmethod
    def of(cls, where: Where) -> TableSchema:
        allowed = ALLOWED[where]
        return cls(
            where,
            {name: f.check for name, f in allowed.items()},
            tuple(name for name, f in allowed.items() if where in f.required),
        )

    def check(self, table: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
        """Every problem of one table at key path `path`, as (key path, message); [] when valid."""
        checks = self.checks
        # The fast path (every table of a valid inventory): one lookup and one call per key.
        for key, value in table.items():
            check = checks.get(key)
            if check is None or check(value) is not None:
                break
        else:
            for key in self.required:
                if key not in table:
                    break
            else:
                return _NO_PROBLEMS
        problems: list[tuple[str, str]] = []
        for key, value in table.items():
            check = checks.get(key)
            if check is not None:
                issues = check(value)
                if issues is None:
                    continue
                base = join(path, key)
                problems.extend((base + suffix, message) for suffix, message in issues)
                continue
            other = BY_NAME.get(key)
            if other is None:
                message = unknown_field_message(key, checks)
            else:
                where = WHERE_NAMES[self.where]
                message = f"not allowed in {where} (only in {describe(other.where)})"
            problems.append((join(path, key), message))
        for key in self.required:
            if key not in table:
                problems.append((path, f"{key} is required"))
        return problems

    def valid_part(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """The keys of `table` that are allowed here and valid."""
        checks = self.checks
        return {
            key: value
            for key, value in table.items()
            if key in checks and checks[key](value) is None
        }


# Looked up once: hashing a Flag member runs Python code, too slow for a per-node lookup.
DEFAULTS_TABLE: Final = TableSchema.of(Where.DEFAULTS)
ROLE_TABLE: Final = TableSchema.of(Where.ROLE)
TARGET_TABLE: Final = TableSchema.of(Where.TARGET)
NODE_TABLE: Final = TableSchema.of(Where.NODE)


def reference() -> str:
    """The field reference as a Markdown table (for docs; generated from the schema)."""
    lines = [
        "| field | type | merge | allowed in | built-in default |",
        "|---|---|---|---|---|",
    ]
    for f in FIELDS:
        default = "" if f.default is None else f"`{json.dumps(f.default, default=repr)}`"
        if f.default is NODE_NAME:
            default = "the node's name"
        lines.append(
            f"| `{f.name}` | {f.type} | {f.merge.value} | {describe(f.where)} | {default} |"
        )
    return "\n".join(lines)
