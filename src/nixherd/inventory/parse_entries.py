"""Validating and building the typed entries of `entries.py` from the inventory's tables.

Validators (`check_issues`, `key_issues`, `data_issues`) report (key-path suffix, message) pairs
for the field table (`fields.py`); builders (`parse_check`, `build_key`, `build_data`) turn a
table already validated into its entry, once, in the resolver. A value given nowhere takes the
default its dataclass declares: nothing here repeats a default.

Health checks: everything that would only fail once the node has switched (a URL that does not
parse, a port out of range, an unknown placeholder, a number that overflows a sleep) is refused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from nixherd.inventory import template
from nixherd.inventory.entries import (
    CheckKind,
    DataFile,
    Format,
    HealthCheck,
    Key,
    SourceKind,
    Upload,
    fill,
)
from nixherd.inventory.validate import (
    MAX_USER,
    Issue,
    absolute_path,
    argv,
    choice,
    got,
    is_host,
    one,
    record,
    shown,
    source_path,
    string,
    unit_name_problem,
)

# --- health checks --------------------------------------------------------------------------------

_CHECK_DEFAULTS: Final = {f.name: f.default for f in dataclasses.fields(HealthCheck)}

# The keys of a `checks.<name>` table; the defaults quoted are HealthCheck's own.
CHECK_FIELDS: Mapping[str, str] = {
    "command": "list of strings: argv run on the target; healthy when it exits 0",
    "http": "string: URL fetched from the deployer ({host}, {node} are filled in)",
    "tcp": "string: host:port the deployer connects to ({host}, {node} are filled in)",
    "unit": "string: systemd unit that must be active on the target (`systemctl is-active`), "
    'e.g. "app.service"',
    "status": f"integer: expected HTTP status, 100..599 (default {_CHECK_DEFAULTS['status']})",
    "body": "string: regex the HTTP body must match",
    "timeout": f"number: seconds per attempt, 0.01..3600 (default {_CHECK_DEFAULTS['timeout']:g})",
    "retries": "integer: attempts after the first failure, 0..1000 "
    f"(default {_CHECK_DEFAULTS['retries']})",
    "interval": "number: seconds between attempts, 0..3600 "
    f"(default {_CHECK_DEFAULTS['interval']:g})",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_CHECK_SECONDS = 3600  # per attempt and between attempts: an hour is already no health check
MAX_RETRIES = 1000
PLACEHOLDERS = ("{host}", "{node}")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_PORT = re.compile(r"[0-9]{1,5}").fullmatch
_DIGITS = re.compile(r"[0-9]{1,20}").fullmatch
# What a placeholder stands for while validating: any valid host and node name would do.
_SAMPLE = {"host": "host.example", "node": "node"}


def parse_check(name: str, data: Mapping[str, Any]) -> tuple[HealthCheck | None, list[str]]:
    """Build a check from its inventory table; returns (check, problems as `key: message`)."""
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(f"{name}: check names match [A-Za-z0-9][A-Za-z0-9_.-]*")
    for key in data:
        if key not in CHECK_FIELDS:
            problems.append(f"{key}: unknown field")
    kinds = [k for k in ("command", "http", "tcp", "unit") if k in data]
    if len(kinds) != 1:
        problems.append("exactly one of command, http, tcp, unit is required")
    command: tuple[str, ...] = ()
    url = address = unit = ""
    if "command" in data:
        raw = data["command"]
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(w, str) and w and "\x00" not in w for w in raw)
        ):
            problems.append("command: must be a non-empty list of non-empty strings")
        else:
            command = tuple(raw)
    if "http" in data:
        raw = data["http"]
        if not isinstance(raw, str) or not re.match(r"^https?://[^\s]+$", raw):
            problems.append("http: must be an http:// or https:// URL")
        elif (problem := _url_problem(raw)) is not None:
            problems.append(f"http: {problem}")
        else:
            url = raw
    if "tcp" in data:
        raw = data["tcp"]
        if not isinstance(raw, str) or not re.match(r"^[^\s]+:[^\s]*$", raw):
            problems.append("tcp: must be host:port")
        elif (problem := _address_problem(raw)) is not None:
            problems.append(f"tcp: {problem}")
        else:
            address = raw
    if "unit" in data:
        if (problem := unit_name_problem(data["unit"])) is not None:
            problems.append(f"unit: {problem}")
        else:
            unit = data["unit"]
    given: dict[str, Any] = {}
    _number(data, "status", given, int, problems, low=100, high=599)
    _number(data, "timeout", given, float, problems, low=0.01, high=MAX_CHECK_SECONDS, unit=True)
    _number(data, "retries", given, int, problems, low=0, high=MAX_RETRIES)
    _number(data, "interval", given, float, problems, low=0, high=MAX_CHECK_SECONDS, unit=True)
    body = data.get("body")
    if body is not None:
        if not isinstance(body, str):
            problems.append("body: must be a string (a regex)")
        else:
            try:
                re.compile(body)
                given["body"] = body
            except re.error as exc:
                problems.append(f"body: not a valid regex: {exc}")
    if ("body" in data or "status" in data) and kinds and kinds != ["http"]:
        problems.append("status/body: only for http checks")
    if problems or len(kinds) != 1:
        return None, problems
    # Only what the table gives: every default is HealthCheck's own.
    check = HealthCheck(
        name=name,
        kind=CheckKind(kinds[0]),
        command=command,
        url=url,
        address=address,
        unit=unit,
        declared=data,
        **given,
    )
    return check, []


def _number(
    data: Mapping[str, Any],
    key: str,
    given: dict[str, Any],
    kind: type[int] | type[float],
    problems: list[str],
    *,
    low: float,
    high: float,
    unit: bool = False,
) -> None:
    """Check `data[key]` when present and put it in `given`, as a `kind`."""
    if key not in data:
        return
    value = data[key]
    # TOML booleans are ints in Python: refuse them explicitly.
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        problems.append(f"{key}: must be {'an integer' if kind is int else 'a number'}")
        return
    # Written so that nan fails too (every comparison with nan is false).
    if not low <= value <= high:
        problems.append(f"{key}: must be {low}..{high}{' seconds' if unit else ''}, got {value}")
        return
    given[key] = kind(value)


def _placeholder_problem(text: str) -> str | None:
    """A `{...}` other than {host} and {node}: it would reach the network as typed."""
    for found in _PLACEHOLDER.findall(text):
        if found not in PLACEHOLDERS:
            return f"unknown placeholder {found} (only {{host}} and {{node}} are filled in)"
    filled = fill(text, **_SAMPLE)
    if "{" in filled or "}" in filled:
        return "a { or } that is no placeholder (only {host} and {node} are filled in)"
    return None


def _host_problem(host: str) -> str | None:
    return None if is_host(host) else f"not a valid host: {shown(host)}"


def _port_problem(text: str) -> str | None:
    if _PORT(text) is not None and 1 <= int(text) <= 65535:
        return None
    return f"port must be 1..65535, got {text if _DIGITS(text) else shown(text)}"


def _url_problem(url: str) -> str | None:
    """Why an http check's URL (placeholders filled as they will be) cannot be fetched."""
    import urllib.parse

    problem = _placeholder_problem(url)
    if problem is not None:
        return problem
    try:
        parts = urllib.parse.urlsplit(fill(url, **_SAMPLE))
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    host = parts.hostname
    if not host:
        return "not a valid URL: no host"
    _, colon, port = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")
    if colon and port:
        problem = _port_problem(port)
    return problem or _host_problem(host)


def _address_problem(address: str) -> str | None:
    """Why a tcp check's `host:port` (placeholders filled) cannot be connected to."""
    problem = _placeholder_problem(address)
    if problem is not None:
        return problem
    host, _, port = fill(address, **_SAMPLE).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _port_problem(port) or _host_problem(host)


def check_issues(value: Any) -> list[tuple[str, str]] | None:
    """The inventory validator of one `checks.<name>` entry: (key-path suffix, message) pairs."""
    if not isinstance(value, dict):
        return [
            ("", "must be a table (command, http, tcp or unit, with timeout, retries, interval)")
        ]
    _, problems = parse_check("check", value)
    issues: list[tuple[str, str]] = []
    for problem in problems:
        key, sep, message = problem.partition(": ")
        if sep and (key in CHECK_FIELDS or message == "unknown field"):
            issues.append((f".{key}", message))
        else:
            issues.append(("", problem))
    return issues or None


# --- keys and data files ----------------------------------------------------------------------

KEY_SOURCES: Final = tuple(kind.value for kind in SourceKind)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").fullmatch
# A login or group name (a trailing $ for machine accounts), or a numeric id.
_OWNER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]{1,10}").fullmatch
_MODE = re.compile(r"0?[0-7]{3}").fullmatch


def _var_path(value: Any) -> list[Issue] | None:
    if type(value) is not str:
        return one(f"must be a string, {got(value)}")
    try:
        template.var_path(value)
    except ValueError:
        return one(
            f"must be a dotted var path like a.b (letters, digits, _, -), got {shown(value)}"
        )
    return None


def _template(value: Any) -> list[Issue] | None:
    if type(value) is not str:
        return one(f"must be a string, {got(value)}")
    try:
        template.check(value)
    except ValueError as exc:
        return one(str(exc))
    return None


_owner = string(_OWNER, "a user or group name, or a numeric id", MAX_USER)
_mode = string(_MODE, 'an octal mode string like "0400"', 4)

_key_entry = record(
    {
        "file": source_path,
        "command": argv,
        "env": string(_ENV_NAME, "an environment variable name", 255),
        "dest": absolute_path,
        "user": _owner,
        "group": _owner,
        "mode": _mode,
        "upload": choice(*(u.value for u in Upload)),
    }
)


def key_issues(value: Any) -> list[Issue] | None:
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
        "path": absolute_path,
        "format": choice(*(f.value for f in Format)),
        "source": _var_path,
        "template": _template,
        "mode": _mode,
        "user": _owner,
        "group": _owner,
        "reload": argv,
    },
    required=("path",),
)


def data_issues(value: Any) -> list[Issue] | None:
    """One data file: json/toml render `source` (or all vars), text renders `template`."""
    issues = _data_entry(value)
    if type(value) is dict:
        text = value.get("format") == Format.TEXT.value
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


# --- building (tables already validated) ---------------------------------------------------------


def build_key(name: str, table: Mapping[str, Any]) -> Key:
    """The key a valid `keys.<name>` table declares."""
    (kind,) = (k for k in SourceKind if k.value in table)
    raw = table[kind.value]
    source = tuple(raw) if kind is SourceKind.COMMAND else (raw,)
    given: dict[str, Any] = {k: table[k] for k in ("user", "group") if k in table}
    if "mode" in table:
        given["mode"] = int(table["mode"], 8)
    if "upload" in table:
        given["upload"] = Upload(table["upload"])
    dest = table.get("dest") or Key.default_dest(name)
    return Key(name, kind, source, dest, declared=table, **given)


def build_data(name: str, table: Mapping[str, Any]) -> DataFile:
    """The data file a valid `data.<name>` table declares."""
    given: dict[str, Any] = {
        k: table[k] for k in ("source", "template", "user", "group") if k in table
    }
    if "format" in table:
        given["format"] = Format(table["format"])
    if "mode" in table:
        given["mode"] = int(table["mode"], 8)
    if "reload" in table:
        given["reload"] = tuple(table["reload"])
    return DataFile(name, table["path"], declared=table, **given)


def build_check(name: str, table: Mapping[str, Any]) -> HealthCheck:
    """The health check a valid `checks.<name>` table declares."""
    check, problems = parse_check(name, table)
    if check is None:  # pragma: no cover - the field table validated it
        raise ValueError(f"check {name}: {'; '.join(problems)}")
    return check


# By the inventory field that holds the entries: one entry's validator (the field table's, see
# fields._entry_issues) and its builder (the resolver's). Both are looked up here lazily, so that
# an inventory without entries never loads this module.
ISSUES: Final[Mapping[str, Callable[[Any], list[Issue] | None]]] = {
    "keys": key_issues,
    "data": data_issues,
    "checks": check_issues,
}
BUILDERS: Final[Mapping[str, Callable[[str, Mapping[str, Any]], Key | DataFile | HealthCheck]]] = {
    "keys": build_key,
    "data": build_data,
    "checks": build_check,
}
