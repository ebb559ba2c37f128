"""Health checks: running them (the typed checks of `nixherd.inventory.entries`, built and
validated once by the inventory; see docs/inventory.md for the `checks.<name>` tables).

A check is one of four kinds: a command run on the target (exit 0 = healthy), a systemd unit that
must be active on the target (`systemctl is-active`), an HTTP fetch or a TCP connect from the
deployer ({host} and {node} filled in). Each attempt has `timeout` seconds;
a failed one is retried `retries` times, `interval` seconds apart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nixherd.errors import CommandError
from nixherd.events import EventSink, LogLine, Stage, StageFinished, StageStarted
from nixherd.inventory.entries import CheckKind as CheckKind
from nixherd.inventory.entries import HealthCheck as HealthCheck
from nixherd.inventory.entries import fill
from nixherd.run.ssh import Connection


@dataclass(frozen=True, slots=True)
class CheckResult:
    """How one check went on one node."""

    name: str
    ok: bool
    attempts: int
    seconds: float
    message: str


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
        case CheckKind.UNIT:
            return _unit(conn, check)


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


# `systemctl is-active` prints the unit's state and exits 0 only for active, reloading and
# refreshing; 3 for any other state, 4 when no such unit is loaded (systemd/systemd
# src/systemctl/systemctl-is-active.c). 127 is the remote shell's "command not found".
_NO_SUCH_UNIT = 4
_NOT_FOUND = 127


def unit_argv(unit: str) -> list[str]:
    """The argv a `unit` check runs on the target (the name validated by the inventory:
    `validate.unit_name_problem`; `--` so that no name is ever read as an option)."""
    return ["systemctl", "is-active", "--", unit]


def _unit(conn: Connection, check: HealthCheck) -> tuple[bool, str]:
    unit = check.unit
    try:
        result = conn.run(unit_argv(unit), timeout=check.timeout, check=False, what="check")
    except CommandError:
        return False, f"{unit}: timed out after {check.timeout:g}s"
    state = result.stdout.strip().splitlines()
    said = state[0] if state else ""
    if result.ok:
        return True, f"{unit}: {said or 'active'}"
    if result.returncode == _NOT_FOUND:
        return False, f"{unit}: systemctl not found on the node (a unit check needs systemd)"
    if result.returncode == _NO_SUCH_UNIT:
        return False, f"{unit}: no such unit on the node"
    errors = result.stderr.strip().splitlines()
    why = said or (errors[-1][:200] if errors else "")
    return False, f"{unit}: {why or 'not active'} (exit {result.returncode})"


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
