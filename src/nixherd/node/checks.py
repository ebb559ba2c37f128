"""Health checks: their model (parsed from the inventory's `checks`) and running them.

A check is one of three kinds, named by the key that carries it:

    [nodes.web-1.checks.site]            # HTTP from the deployer
    http = "http://{host}:8080/health"   # {host} and {node} are filled in
    status = 200                         # expected status (default 200)
    body = "ok|ready"                    # optional regex the body must match

    [roles.web.checks.listening]         # TCP connect from the deployer
    tcp = "{host}:8080"

    [defaults.checks.units]              # a command run on the target (argv list); exit 0 = healthy
    command = ["systemctl", "is-system-running", "--wait"]

Each also takes `timeout` (seconds per attempt, 0.01..3600, default 5), `retries` (attempts after
the first failure, 0..1000, default 2) and `interval` (seconds between attempts, 0..3600, default
1). Everything that would only fail once the node has switched (a URL that does not parse, a port
out of range, an unknown placeholder, a number that overflows a sleep) is refused by `validate`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from nixherd.errors import CommandError, NixherdError
from nixherd.events import EventSink, LogLine, Stage, StageFinished, StageStarted

if TYPE_CHECKING:
    # The inventory validates `checks` through this module: keep its import light.
    from nixherd.fleet.report import RunReport
    from nixherd.run.ssh import Connection


class CheckKind(Enum):
    COMMAND = "command"
    HTTP = "http"
    TCP = "tcp"


CHECK_FIELDS: Mapping[str, str] = {
    "command": "list of strings: argv run on the target; healthy when it exits 0",
    "http": "string: URL fetched from the deployer ({host}, {node} are filled in)",
    "tcp": "string: host:port the deployer connects to ({host}, {node} are filled in)",
    "status": "integer: expected HTTP status, 100..599 (default 200)",
    "body": "string: regex the HTTP body must match",
    "timeout": "number: seconds per attempt, 0.01..3600 (default 5)",
    "retries": "integer: attempts after the first failure, 0..1000 (default 2)",
    "interval": "number: seconds between attempts, 0..3600 (default 1)",
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


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One health check of a node, as declared (placeholders not yet filled in)."""

    name: str
    kind: CheckKind
    command: tuple[str, ...] = ()
    url: str = ""
    address: str = ""
    status: int = 200
    body: str | None = None
    timeout: float = 5.0
    retries: int = 2
    interval: float = 1.0

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


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How one check went on one node."""

    name: str
    ok: bool
    attempts: int
    seconds: float
    message: str


def parse_check(name: str, data: Mapping[str, Any]) -> tuple[HealthCheck | None, list[str]]:
    """Build a check from its inventory table; returns (check, problems as `key: message`)."""
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(f"{name}: check names match [A-Za-z0-9][A-Za-z0-9_.-]*")
    for key in data:
        if key not in CHECK_FIELDS:
            problems.append(f"{key}: unknown field")
    kinds = [k for k in ("command", "http", "tcp") if k in data]
    if len(kinds) != 1:
        problems.append("exactly one of command, http, tcp is required")
    command: tuple[str, ...] = ()
    url = address = ""
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
    status = _number(data, "status", 200, int, problems, low=100, high=599)
    timeout = _number(
        data, "timeout", 5.0, float, problems, low=0.01, high=MAX_CHECK_SECONDS, unit=True
    )
    retries = _number(data, "retries", 2, int, problems, low=0, high=MAX_RETRIES)
    interval = _number(
        data, "interval", 1.0, float, problems, low=0, high=MAX_CHECK_SECONDS, unit=True
    )
    body = data.get("body")
    if body is not None:
        if not isinstance(body, str):
            problems.append("body: must be a string (a regex)")
            body = None
        else:
            try:
                re.compile(body)
            except re.error as exc:
                problems.append(f"body: not a valid regex: {exc}")
                body = None
    if ("body" in data or "status" in data) and kinds and kinds != ["http"]:
        problems.append("status/body: only for http checks")
    if problems or len(kinds) != 1:
        return None, problems
    check = HealthCheck(
        name=name,
        kind=CheckKind(kinds[0]),
        command=command,
        url=url,
        address=address,
        status=int(status),
        body=body,
        timeout=float(timeout),
        retries=int(retries),
        interval=float(interval),
    )
    return check, []


def _number(
    data: Mapping[str, Any],
    key: str,
    default: float,
    kind: type[int] | type[float],
    problems: list[str],
    *,
    low: float,
    high: float,
    unit: bool = False,
) -> float:
    if key not in data:
        return default
    value = data[key]
    # TOML booleans are ints in Python: refuse them explicitly.
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        problems.append(f"{key}: must be {'an integer' if kind is int else 'a number'}")
        return default
    # Written so that nan fails too (every comparison with nan is false).
    if not low <= value <= high:
        problems.append(f"{key}: must be {low}..{high}{' seconds' if unit else ''}, got {value}")
        return default
    return float(value)


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
    from nixherd.inventory.schema import is_host, shown

    return None if is_host(host) else f"not a valid host: {shown(host)}"


def _port_problem(text: str) -> str | None:
    if _PORT(text) is not None and 1 <= int(text) <= 65535:
        return None
    from nixherd.inventory.schema import shown

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


def validate(value: Any) -> list[tuple[str, str]] | None:
    """The inventory validator of one `checks.<name>` entry: (key-path suffix, message) pairs."""
    if not isinstance(value, dict):
        return [("", "must be a table (command, http or tcp, with timeout, retries, interval)")]
    _, problems = parse_check("check", value)
    issues: list[tuple[str, str]] = []
    for problem in problems:
        key, sep, message = problem.partition(": ")
        if sep and (key in CHECK_FIELDS or message == "unknown field"):
            issues.append((f".{key}", message))
        else:
            issues.append(("", problem))
    return issues or None


def checks_of(node: str, tables: Mapping[str, Mapping[str, Any]]) -> tuple[HealthCheck, ...]:
    """A node's resolved inventory `checks` as HealthChecks, in declaration order."""
    found: list[HealthCheck] = []
    for name, table in tables.items():
        check, problems = parse_check(name, table)
        if check is None:
            raise NixherdError(f"{node}: check {name}: {'; '.join(problems)}")
        found.append(check)
    return tuple(found)


def fill(template: str, *, host: str, node: str) -> str:
    """Fill {host} and {node} (plain replacement: no format-string attribute access)."""
    # An IPv6 address needs brackets inside a URL or host:port.
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return template.replace("{host}", shown).replace("{node}", node)


Sleep = Callable[[float], None]


def run_check(
    conn: Connection,
    check: HealthCheck,
    *,
    emit: EventSink | None = None,
    sleep: Sleep = time.sleep,
) -> CheckResult:
    """Run one check with its retries; never raises for an unhealthy node."""
    node = conn.target.node
    started = time.monotonic()
    message = ""
    for attempt in range(1, check.retries + 2):
        ok, message = _attempt(conn, check)
        if ok:
            return CheckResult(check.name, True, attempt, time.monotonic() - started, message)
        if emit is not None:
            emit(LogLine(node, f"check {check.name}: attempt {attempt} failed: {message}"))
        if attempt <= check.retries:
            sleep(check.interval)
    return CheckResult(check.name, False, check.retries + 1, time.monotonic() - started, message)


def run_checks(
    conn: Connection,
    checks: Sequence[HealthCheck],
    *,
    emit: EventSink,
    sleep: Sleep = time.sleep,
) -> tuple[CheckResult, ...]:
    """Run every check of a node (in order, all of them) and report each."""
    node = conn.target.node
    if not checks:
        return ()
    emit(StageStarted(node, Stage.CHECK))
    started = time.monotonic()
    results: list[CheckResult] = []
    for check in checks:
        result = run_check(conn, check, emit=emit, sleep=sleep)
        state = "ok" if result.ok else "FAILED"
        emit(LogLine(node, f"check {check.name}: {state} ({result.message})"))
        results.append(result)
    emit(StageFinished(node, Stage.CHECK, time.monotonic() - started))
    return tuple(results)


def failed(results: Sequence[CheckResult]) -> list[CheckResult]:
    return [r for r in results if not r.ok]


def summary(results: Sequence[CheckResult]) -> str:
    """One line naming the failed checks and why, e.g. for an error message."""
    return "; ".join(f"{r.name}: {r.message}" for r in failed(results))


def _attempt(conn: Connection, check: HealthCheck) -> tuple[bool, str]:
    host, node = conn.target.host, conn.target.node
    match check.kind:
        case CheckKind.COMMAND:
            return _command(conn, check)
        case CheckKind.HTTP:
            return _http(fill(check.url, host=host, node=node), check)
        case CheckKind.TCP:
            return _tcp(fill(check.address, host=host, node=node), check.timeout)


def _command(conn: Connection, check: HealthCheck) -> tuple[bool, str]:
    try:
        result = conn.run(check.command, timeout=check.timeout, check=False, what="check")
    except CommandError:
        return False, f"timed out after {check.timeout:g}s"
    if result.ok:
        return True, "exit 0"
    tail = (result.stdout + result.stderr).strip().splitlines()
    last = f": {tail[-1][:200]}" if tail else ""
    return False, f"exit {result.returncode}{last}"


def _http(url: str, check: HealthCheck) -> tuple[bool, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "nixherd-check"})
    try:
        with urllib.request.urlopen(request, timeout=check.timeout) as response:
            code = int(response.status)
            body = response.read(1 << 20).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        code = exc.code
        body = exc.read(1 << 20).decode("utf-8", errors="replace")
        exc.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"
    if code != check.status:
        return False, f"{url}: status {code}, expected {check.status}"
    if check.body is not None and not re.search(check.body, body):
        return False, f"{url}: body does not match /{check.body}/"
    return True, f"{url}: status {code}"


def _tcp(address: str, timeout: float) -> tuple[bool, str]:
    import socket

    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        return False, f"{address}: bad port"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{address}: connected"
    except OSError as exc:
        return False, f"{address}: {exc.strerror or exc}"


def check_nodes(
    nodes: Sequence[Any],
    *,
    ssh_config: str | None = None,
    parallel: int = 10,
    emit: EventSink,
    cancel: Any = None,
) -> RunReport:
    """`nixherd check-health`: every selected node's checks, in parallel; a result per node.

    `nodes` are inventory nodes (name, host, user, port, ssh_options, checks).
    """
    from nixherd.events import Outcome
    from nixherd.fleet.fanout import report_per_node
    from nixherd.fleet.plan import target_of
    from nixherd.fleet.report import ErrorInfo, NodeResult
    from nixherd.run.ssh import Connection

    by_name = {n.name: n for n in nodes}

    def work(name: str) -> NodeResult:
        node = by_name[name]
        started = time.monotonic()
        outcome, error, detail = Outcome.FAILED, None, None
        try:
            checks = checks_of(name, getattr(node, "checks", None) or {})
            if not checks:
                outcome, detail = Outcome.OK, "no checks"
            else:
                with Connection(target_of(node, ssh_config)) as conn:
                    results = run_checks(conn, checks, emit=emit)
                bad = failed(results)
                detail = f"{len(results) - len(bad)}/{len(results)} checks passed"
                if bad:
                    error = ErrorInfo(f"{detail}: {summary(results)}")
                else:
                    outcome = Outcome.OK
        except NixherdError as exc:
            error = ErrorInfo.from_exception(exc)
        seconds = time.monotonic() - started
        return NodeResult(
            node=name,
            outcome=outcome,
            stages={Stage.CHECK.value: seconds},
            error=error,
            detail=detail,
        )

    return report_per_node(
        [n.name for n in nodes],
        work,
        command="check-health",
        options={"parallel": parallel},
        parallel=parallel,
        emit=emit,
        cancel=cancel,
    )
