"""The validator library of the inventory: small checks that return None for a good value (the
fast path: no allocation) or the issues found, combined into validators of whole tables (`string`,
`integer`, `list_of`, `record`, `named_table`, ...), and the wording of their messages.

The field table that uses them is `fields.py`; the entries of named tables are `entries.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# A validator returns None when the value is fine (the fast path: no allocation), otherwise the
# issues found, each a key-path suffix relative to the value (".a.b", "[2]" or "") and a message.
Issue = tuple[str, str]
Check = Callable[[Any], "list[Issue] | None"]


# --- limits ---------------------------------------------------------------------------------------

MAX_NAME = 63
MAX_HOST = 253
MAX_USER = 32
MAX_DEPTH = 32  # nesting inside vars/config/named tables
# Attribute names Nix gives a meaning of its own: a set with `outPath` is printed as that string,
# `__toString` and `__functor` make it a string or a function. The resolved node would not read
# back as the data the inventory holds.
NIX_SPECIAL_KEYS = frozenset({"outPath", "__toString", "__functor"})
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1  # Nix integers are 64-bit; fromTOML silently clamps anything larger
MAX_SHOWN = 48  # characters of a bad value quoted back in an error message

NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"
USER_PATTERN = "[A-Za-z_][A-Za-z0-9_.-]*"
SYSTEM_PATTERN = "[a-z0-9_]+-[a-z0-9_]+"

NAME = re.compile(NAME_PATTERN).fullmatch
USER = re.compile(USER_PATTERN).fullmatch
SYSTEM = re.compile(SYSTEM_PATTERN).fullmatch
# Hostnames and IPv4 addresses: dot-separated labels, the first one never starting with `-` (the
# value becomes ssh argv). IPv6 addresses are recognised apart (they contain `:`).
HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?").fullmatch
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?").fullmatch
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+").fullmatch


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


def one(message: str) -> list[Issue]:
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
            return one(f"must be {what}, {got(value)}")
        if len(value) > max_len:
            return one(f"must be at most {max_len} characters, got {len(value)}")
        return one(f"must be {expected}, got {shown(value)}")

    return check


def name_check(what: str = "a name") -> Check:
    return string(
        NAME,
        f"{what} matching {NAME_PATTERN} (at most {MAX_NAME} characters)",
        MAX_NAME,
    )


# --- names the peers cannot carry ------------------------------------------------------------
# mkFleet's Colmena hive and deploy-rs nodes (nix/lib.nix) are keyed by node name, and nix/lib.nix
# refuses these names too (docs/nix-library.md, "Node names and the peers").
# - Colmena keeps `defaults`, `meta` and `network` for the hive itself (nix-community/colmena
#   src/nix/hive/eval.nix, `reservedNames`).
# - deploy-rs's interface.json admits a node only under the pattern `[A-z][A-z0-9_-]*`, unanchored
#   as JSON Schema reads a pattern: the name needs one character of A..z somewhere. Among the
#   characters of a nixherd name that is a letter or `_`.
COLMENA_RESERVED = ("defaults", "meta", "network")
_DEPLOY_RS_NAME = re.compile("[A-Za-z_]").search
NO_LETTER = "deploy-rs's schema (interface.json) refuses a node name without a letter or _"


def peer_name_problem(name: str) -> str | None:
    """Why a valid node name cannot be carried by the Colmena or deploy-rs outputs, or None."""
    if name in COLMENA_RESERVED:
        return (
            f"{shown(name)} is a name Colmena keeps for the hive itself "
            f"({', '.join(COLMENA_RESERVED)}): rename the node"
        )
    if _DEPLOY_RS_NAME(name) is None:
        return f"{shown(name)}: {NO_LETTER}: rename the node"
    return None


def node_name_check() -> Check:
    """A node name: a valid name (`name_check`) that the peers' outputs can carry too."""
    valid = name_check("a node name")

    def check(value: Any) -> list[Issue] | None:
        # The fast path (every node of a valid inventory), without a further call.
        if (
            type(value) is str
            and len(value) <= MAX_NAME
            and NAME(value) is not None
            and value not in COLMENA_RESERVED
            and _DEPLOY_RS_NAME(value) is not None
        ):
            return None
        found = valid(value)
        if found is not None:
            return found
        problem = peer_name_problem(value)
        return None if problem is None else one(problem)

    return check


def is_host(value: str) -> bool:
    """Whether a string is a valid `host` (hostname, IPv4 or IPv6 address; never `-` first)."""
    return len(value) <= MAX_HOST and host_ok(value)


def host_ok(value: str) -> bool:
    if ":" not in value:
        return HOSTNAME(value) is not None
    if _IPV6(value) is None:
        return False
    import ipaddress  # only IPv6 hosts pay for it

    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


# systemd's unit name rules (systemd/systemd src/basic/unit-name.c, unit_name_is_valid; the
# suffixes are its unit types, src/basic/unit-def.c): shorter than 256 characters, a name of
# [A-Za-z0-9:_.\\-] with at most one "@" (not first), then "." and a unit type. A health check
# names a unit that can be active: plain ("app.service") or an instance ("getty@tty1.service"),
# never a template ("getty@.service").
UNIT_NAME_MAX = 255
UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
)
_UNIT = re.compile(
    r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\@-]+)?\.(?:" + "|".join(UNIT_TYPES) + ")"
).fullmatch


def unit_name_problem(value: object) -> str | None:
    """Why `value` is not the name of a systemd unit that can be active (None: it is)."""
    if not isinstance(value, str):
        return f'must be a systemd unit name such as "app.service", got {type_name(value)}'
    if len(value) > UNIT_NAME_MAX:
        return f"a systemd unit name has at most {UNIT_NAME_MAX} characters, got {len(value)}"
    if value.endswith(tuple(f"@.{t}" for t in UNIT_TYPES)):
        return f'{shown(value)} is a template: name an instance ("name@instance.service")'
    if _UNIT(value) is None:
        return (
            f'not a systemd unit name: {shown(value)} (letters, digits, ":-_.\\" and one "@", '
            f"then a unit type: .{', .'.join(UNIT_TYPES)})"
        )
    return None


def integer(low: int, high: int) -> Check:
    def check(value: Any) -> list[Issue] | None:
        if type(value) is int and low <= value <= high:
            return None
        if type(value) is not int:
            return one(f"must be an integer, {got(value)}")
        return one(f"must be {low}..{high}, got {shown(value)}")

    return check


def list_of(item: Check) -> Check:
    """An array whose every element passes `item`; each bad element is reported."""

    def check(value: Any) -> list[Issue] | None:
        if type(value) is not list:
            return one(f"must be an array, {got(value)}")
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
                if type(element) is not str or len(element) > MAX_NAME or NAME(element) is None:
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
        return one(f"must be a table, {got(value)}")
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
            return one(f"must be a table, {got(value)}")
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
            return one(f"must be a table, {got(value)}")
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


MAX_PATH = 4096
_CONTROL = re.compile(r"[\x00\n]").search


def absolute_path(value: Any) -> list[Issue] | None:
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
        return one(f"must be a string, {got(value)}")
    if value.startswith("/") and value.endswith(("/.", "/..")) and not _CONTROL(value):
        # A directory, not a file: writing it could only fail on the node, in the middle of a run.
        last = value.rpartition("/")[2]
        return one(f"must name a file, not a directory (it ends in /{last}), got {shown(value)}")
    return one(f"must be an absolute file path without NUL or newline, got {shown(value)}")


def source_path(value: Any) -> list[Issue] | None:
    if type(value) is str and value and len(value) <= MAX_PATH and not _CONTROL(value):
        return None
    if not isinstance(value, str):
        return one(f"must be a string, {got(value)}")
    return one(f"must be a non-empty path without NUL or newline, got {shown(value)}")


def argv(value: Any) -> list[Issue] | None:
    if type(value) is not list or not value:
        return one(f"must be a non-empty array of strings (an argv), {got(value)}")
    issues: list[Issue] = []
    for index, word in enumerate(value):
        if type(word) is not str:
            issues.append((f"[{index}]", f"must be a string, {got(word)}"))
        elif "\x00" in word or (index == 0 and not word):
            issues.append((f"[{index}]", f"must be a string without NUL, got {shown(word)}"))
    return issues or None


def choice(*choices: str) -> Check:
    expected = " or ".join(json.dumps(c) for c in choices)

    def check(value: Any) -> list[Issue] | None:
        if type(value) is str and value in choices:
            return None
        return one(f"must be {expected}, {got(value)}")

    return check


def is_name(value: str) -> bool:
    """Whether a string is a valid node, role or tag name (the quick yes/no, no message)."""
    return len(value) <= MAX_NAME and NAME(value) is not None
